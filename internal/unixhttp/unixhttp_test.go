package unixhttp

import (
	"io"
	"net"
	"net/http"
	"path/filepath"
	"testing"
)

func TestTransportGoesToTheSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello "+r.URL.Path) }))
	c := &http.Client{Transport: Transport(sock, 1)}
	resp, err := c.Get("http://any-host-at-all/x")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "hello /x" {
		t.Fatalf("%q", b)
	}
}
