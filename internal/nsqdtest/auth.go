package nsqdtest

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// AuthIdentity is the identity AuthServer grants for the right secret.
const AuthIdentity = "test-user"

// authResponse is the body AuthServer returns for the right secret, in the
// shape nsqd v1.3.0 decodes (internal/auth/authorizations.go, auth.State).
const authResponse = `{"ttl":3600,"identity":"` + AuthIdentity + `","identity_url":"http://example.invalid",` +
	`"authorizations":[{"topic":".*","channels":[".*"],"permissions":["subscribe","publish"]}]}`

// AuthServer starts an HTTP server implementing nsqd's auth API and returns
// its host:port, for nsqd's --auth-http-address flag. The server is closed
// on t.Cleanup.
//
// nsqd queries GET /auth?remote_ip=...&tls=true|false&secret=...&common_name=...
// when a client sends AUTH. If secret matches, the server answers 200 with
// a one-hour TTL, identity AuthIdentity and permission to publish and
// subscribe to every topic and channel; otherwise it answers 403, which
// nsqd reports to the client as E_AUTH_FAILED. (On a 403 nsqd v1.3.0 tries
// to parse the body as {"https_port":N} to retry over HTTPS; the plain-text
// body makes that fail, which only shows up in nsqd's log.)
func AuthServer(t testing.TB, secret string) (addr string) {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /auth", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("secret") != secret {
			http.Error(w, "NOT_AUTHORIZED", http.StatusForbidden)
			return
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Write([]byte(authResponse))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}
