package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/sealbox/sealbox/admin"
	"github.com/sealbox/sealbox/admin/api"
	"github.com/sealbox/sealbox/internal/errclass"
	"github.com/sealbox/sealbox/internal/memlock"
)

// errorFor maps an error from the layers below to an HTTP answer: its class
// decides the code and the status. Messages are the errors' own: none of
// them carries a secret.
func errorFor(err error) *api.APIError {
	var ae *api.APIError
	if errors.As(err, &ae) {
		return ae
	}
	c := errclass.Of(err)
	e := &api.APIError{Status: api.StatusOf(c), Code: string(c), Message: err.Error()}
	if c == errclass.Busy {
		e.RetryAfter = 1
		var be *admin.BackoffError
		if errors.As(err, &be) {
			// The guessing defence: too many attempts, not a full queue.
			e.Status, e.RetryAfter = http.StatusTooManyRequests, max(int(be.RetryAfter.Seconds()), 1)
		}
	}
	return e
}

// apiError is an answer of class c with message msg.
func apiError(c errclass.Class, msg string) *api.APIError {
	return &api.APIError{Status: api.StatusOf(c), Code: string(c), Message: msg}
}

func badRequest(format string, a ...any) *api.APIError {
	return &api.APIError{Status: http.StatusBadRequest, Code: string(errclass.Invalid), Message: fmt.Sprintf(format, a...)}
}

func writeError(w http.ResponseWriter, e *api.APIError) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	w.WriteHeader(e.Status)
	json.NewEncoder(w).Encode(e)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(v)
}

// wipe zeroes every password field of a request.
func wipe(ps ...[]byte) {
	for _, p := range ps {
		memlock.Wipe(p)
	}
}
