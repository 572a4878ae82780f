// Package unixhttp makes HTTP clients that talk to one Unix socket, whatever
// the URL's host says: sealbox's client package, sealbox-admin and the bench
// use it.
package unixhttp

import (
	"context"
	"net"
	"net/http"
	"time"
)

// Transport returns a keep-alive transport whose every connection goes to
// the socket at path, holding up to idle idle connections.
func Transport(path string, idle int) *http.Transport {
	return &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		MaxIdleConnsPerHost: idle,
		IdleConnTimeout:     30 * time.Second,
	}
}
