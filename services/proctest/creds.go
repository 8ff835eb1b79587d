package proctest

import (
	"fmt"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/nats-io/nats-server/v2/conf"
)

// RepoRoot is the module's root directory.
func RepoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("no caller")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Creds are the credentials of the checked-in NATS cluster (deploy/nats):
// every role's password (SIGNAL and SYS accounts) and the nodes' route
// credentials.
type Creds struct {
	Passwords           map[string]string // user -> password
	RouteUser, RoutePwd string
}

// LoadCreds parses deploy/nats/n1.conf (which includes accounts.conf) with
// nats-server's own parser, and fails t unless every role in need has a
// password.
func LoadCreds(t testing.TB, need ...string) Creds {
	t.Helper()
	m, err := conf.ParseFile(filepath.Join(RepoRoot(t), "deploy", "nats", "n1.conf"))
	if err != nil {
		t.Fatal(err)
	}
	c := Creds{Passwords: map[string]string{}}
	accounts, _ := m["accounts"].(map[string]any)
	for _, acc := range accounts {
		users, _ := acc.(map[string]any)["users"].([]any)
		for _, u := range users {
			um := u.(map[string]any)
			c.Passwords[um["user"].(string)] = fmt.Sprint(um["password"])
		}
	}
	auth := m["cluster"].(map[string]any)["authorization"].(map[string]any)
	c.RouteUser, c.RoutePwd = auth["user"].(string), fmt.Sprint(auth["password"])
	for _, u := range need {
		if c.Passwords[u] == "" {
			t.Fatalf("accounts.conf: no password for user %q", u)
		}
	}
	return c
}
