package api

import (
	"context"
	"fmt"
	"net/http"
	"slices"

	"github.com/sealbox/sealbox/admin"
	"github.com/sealbox/sealbox/keyring"
	"github.com/sealbox/sealbox/unseal/tang"
	"github.com/sealbox/sealbox/unseal/unattended"
)

// BindRequest asks for a new unattended slot, authorized by an admin.
type BindRequest struct {
	AuthRequest
	Name string `json:"name"`
	Kind string `json:"kind"` // tang, tpm2, threshold
	// Tang: the server's URL, its advertisement as the CLI fetched it
	// (a JWS), and the signing key's thumbprint the admin trusts.
	URL string `json:"url,omitempty"`
	Adv []byte `json:"adv,omitempty"`
	Thp string `json:"thp,omitempty"`
	// TPM2: the PCRs (sha256 bank) to seal to.
	PCRs []int `json:"pcrs,omitempty"`
	// Threshold: t of the named unattended slots, which the new slot
	// replaces.
	T       int      `json:"t,omitempty"`
	Members []string `json:"members,omitempty"`
}

// MaxPCR is the highest PCR index a tpm2 slot may name.
const MaxPCR = 23

// Spec checks the request and turns it into what admin.Manager.Bind takes.
// The advertisement is verified here, wherever it runs (the daemon or
// sealbox-admin on the file): every signing key in it must have signed it,
// and one of them must have the trusted thumbprint.
func (r *BindRequest) Spec(env *unattended.Env) (admin.BindSpec, error) {
	if err := keyring.ValidName(r.Name); err != nil {
		return admin.BindSpec{}, fmt.Errorf("%w: %v", admin.ErrInvalid, err)
	}
	switch r.Kind {
	case "tang":
		if r.URL == "" || len(r.Adv) == 0 || r.Thp == "" {
			return admin.BindSpec{}, fmt.Errorf("%w: a tang binding needs the URL, its advertisement and the trusted thumbprint", admin.ErrInvalid)
		}
		adv, err := tang.ParseAdv(r.URL, r.Adv)
		if err != nil {
			return admin.BindSpec{}, fmt.Errorf("%w: %v", admin.ErrInvalid, err)
		}
		if err := adv.Trust(r.Thp); err != nil {
			return admin.BindSpec{}, fmt.Errorf("%w: %v", admin.ErrInvalid, err)
		}
		return admin.BindSpec{Kind: keyring.KindTang, Detail: r.URL + " thp " + r.Thp,
			Build: func(_ context.Context, kek []byte, _ []*keyring.Slot) ([]byte, error) {
				return unattended.NewTang(adv, kek)
			}}, nil
	case "tpm2":
		pcrs := slices.Clone(r.PCRs)
		slices.Sort(pcrs)
		pcrs = slices.Compact(pcrs)
		if len(pcrs) == 0 {
			return admin.BindSpec{}, fmt.Errorf("%w: a tpm2 binding needs at least one PCR", admin.ErrInvalid)
		}
		for _, p := range pcrs {
			if p < 0 || p > MaxPCR {
				return admin.BindSpec{}, fmt.Errorf("%w: PCR %d is not 0 to %d", admin.ErrInvalid, p, MaxPCR)
			}
		}
		return admin.BindSpec{Kind: keyring.KindTPM2, Detail: fmt.Sprintf("sha256:%v", pcrs),
			Build: func(ctx context.Context, kek []byte, _ []*keyring.Slot) ([]byte, error) {
				return unattended.NewTPM2(ctx, env, kek, pcrs)
			}}, nil
	case "threshold":
		n := len(r.Members)
		if r.T < 1 || r.T > n || n > 16 {
			return admin.BindSpec{}, fmt.Errorf("%w: a threshold needs 1 <= t <= members <= 16 (t=%d, %d members)", admin.ErrInvalid, r.T, n)
		}
		seen := map[string]bool{}
		for _, m := range r.Members {
			if seen[m] {
				return admin.BindSpec{}, fmt.Errorf("%w: member %q named twice", admin.ErrInvalid, m)
			}
			seen[m] = true
		}
		t := r.T
		return admin.BindSpec{Kind: keyring.KindThreshold, Replaces: r.Members, Detail: fmt.Sprintf("%d of %v", t, r.Members),
			Build: func(ctx context.Context, kek []byte, slots []*keyring.Slot) ([]byte, error) {
				ms := make([]unattended.Member, len(slots))
				for i, s := range slots {
					if s.Kind != keyring.KindTang && s.Kind != keyring.KindTPM2 {
						return nil, fmt.Errorf("%w: %q is %s slot; a threshold's members are tang or tpm2 slots", admin.ErrNotUnattended, s.Name, admin.KindWithArticle(s.Kind))
					}
					ms[i] = unattended.Member{Kind: s.Kind, Binding: s.Binding}
				}
				return unattended.NewThreshold(ctx, env, t, ms, kek)
			}}, nil
	}
	return admin.BindSpec{}, fmt.Errorf("%w: kind %q is not tang, tpm2 or threshold", admin.ErrInvalid, r.Kind)
}

// Secrets: see AuthRequest.Secrets.
func (r *BindRequest) Secrets() [][]byte { return [][]byte{r.ActorPassword} }

// BindResponse is what a bind answers: the keyring's identity pin, for
// the configuration's unattended_identity.
type BindResponse struct {
	Identity string `json:"identity"`
}

// Bind adds an unattended slot and returns the keyring's identity pin.
func (c *Client) Bind(ctx context.Context, req *BindRequest) (string, error) {
	var resp BindResponse
	err := c.do(ctx, http.MethodPost, "/v1/slots/bind", req, &resp)
	return resp.Identity, err
}

// Unbind removes the unattended slot name.
func (c *Client) Unbind(ctx context.Context, actor string, actorPw []byte, name string) error {
	if err := pathName(name); err != nil {
		return err
	}
	return c.do(ctx, http.MethodPost, "/v1/slots/"+name+"/unbind", AuthRequest{Actor: actor, ActorPassword: actorPw}, nil)
}
