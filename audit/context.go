package audit

import "context"

type peerKey struct{}

// WithPeer returns a context that carries the peer an operation is for, so
// that the layers that write audit records can name it.
func WithPeer(ctx context.Context, p Peer) context.Context {
	return context.WithValue(ctx, peerKey{}, p)
}

// PeerFrom returns the peer in ctx, or nil.
func PeerFrom(ctx context.Context) *Peer {
	if p, ok := ctx.Value(peerKey{}).(Peer); ok {
		return &p
	}
	return nil
}
