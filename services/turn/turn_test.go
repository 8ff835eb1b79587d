package turn

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

var testNow = time.Unix(1_700_000_000, 0)

// hashed computes the username part for a name coturn would refuse,
// independently of the package: '#' and the hex SHA-256 of the name.
func hashed(name string) string {
	sum := sha256.Sum256([]byte(name))
	return "#" + hex.EncodeToString(sum[:])
}

// expect computes the coturn credential independently of the package:
// base64.StdEncoding(HMAC-SHA1(secret, username)).
func expect(secret, username string) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

func TestCredentials(t *testing.T) {
	turnURL := "turn:turn.test:3478?transport=udp"
	at := func(d time.Duration) string { return strconv.FormatInt(testNow.Add(d).Unix(), 10) }
	withCred := func(secret, username string, urls ...string) ICEServer {
		return ICEServer{URLs: urls, Username: username, Credential: expect(secret, username)}
	}
	type credCase struct {
		name string
		cfg  Config
		user string
		want []ICEServer
	}
	tests := []credCase{
		{
			name: "turn URL default TTL",
			cfg:  Config{Secret: "s3cret", URLs: []string{turnURL}},
			user: "alice",
			want: []ICEServer{withCred("s3cret", at(DefaultTTL)+":alice", turnURL)},
		},
		{
			name: "custom TTL",
			cfg:  Config{Secret: "s3cret", URLs: []string{turnURL}, TTL: 10 * time.Minute},
			user: "alice",
			want: []ICEServer{withCred("s3cret", at(10*time.Minute)+":alice", turnURL)},
		},
		{
			name: "negative TTL means default",
			cfg:  Config{Secret: "s3cret", URLs: []string{turnURL}, TTL: -time.Second},
			user: "alice",
			want: []ICEServer{withCred("s3cret", at(DefaultTTL)+":alice", turnURL)},
		},
		{
			name: "sub-second TTL truncates to the second",
			cfg:  Config{Secret: "s3cret", URLs: []string{turnURL}, TTL: 1500 * time.Millisecond},
			user: "alice",
			want: []ICEServer{withCred("s3cret", at(time.Second)+":alice", turnURL)},
		},
		{
			name: "stun and turn URLs split, order kept",
			cfg: Config{Secret: "k", URLs: []string{
				"turns:turn.test:5349", "STUN:turn.test:3478", turnURL, "stuns:turn.test:5349",
			}},
			user: "bob",
			want: []ICEServer{
				{URLs: []string{"STUN:turn.test:3478", "stuns:turn.test:5349"}},
				withCred("k", at(DefaultTTL)+":bob", "turns:turn.test:5349", turnURL),
			},
		},
		{
			name: "stun only",
			cfg:  Config{Secret: "k", URLs: []string{"stun:turn.test:3478"}},
			user: "bob",
			want: []ICEServer{{URLs: []string{"stun:turn.test:3478"}}},
		},
		{
			name: "no secret no credentials",
			cfg:  Config{URLs: []string{turnURL}},
			user: "bob",
			want: []ICEServer{{URLs: []string{turnURL}}},
		},
		{
			name: "no URLs",
			cfg:  Config{Secret: "k"},
			user: "bob",
			want: nil,
		},
		{
			name: "name with colon and unicode",
			cfg:  Config{Secret: "k", URLs: []string{turnURL}},
			user: "a:b李雷🙂",
			want: []ICEServer{withCred("k", at(DefaultTTL)+":a:b李雷🙂", turnURL)},
		},
		{
			name: "name with dots, stars, slashes, non-ASCII space kept",
			cfg:  Config{Secret: "k", URLs: []string{turnURL}},
			user: "a.b*>/=\u00a0x",
			want: []ICEServer{withCred("k", at(DefaultTTL)+":a.b*>/=\u00a0x", turnURL)},
		},
		{
			name: "union alone kept",
			cfg:  Config{Secret: "k", URLs: []string{turnURL}},
			user: "union",
			want: []ICEServer{withCred("k", at(DefaultTTL)+":union", turnURL)},
		},
		{
			name: "longest plain name kept",
			cfg:  Config{Secret: "k", URLs: []string{turnURL}},
			user: strings.Repeat("n", MaxPlainName),
			want: []ICEServer{withCred("k", at(DefaultTTL)+":"+strings.Repeat("n", MaxPlainName), turnURL)},
		},
	}
	// Names coturn would refuse (or that look like the hashed form) are
	// replaced by '#' + hex SHA-256.
	for _, user := range []string{
		"", "a b", "tab\tx", "cr\rx", "lf\nx", "it's", `say "hi"`, `back\slash`,
		"unionselect", "x UNION y Select z", "UniOn_SeLeCt", "#deadbeef", "nul\x00x", "del\x7fx", "bell\ax",
		"a\xffb", strings.Repeat("n", MaxPlainName+1), "bob:李雷 🙂",
	} {
		tests = append(tests, credCase{
			name: "hashed " + strconv.Quote(user),
			cfg:  Config{Secret: "k", URLs: []string{turnURL}},
			user: user,
			want: []ICEServer{withCred("k", at(DefaultTTL)+":"+hashed(user), turnURL)},
		})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Now = func() time.Time { return testNow }
			got := tc.cfg.Credentials(tc.user)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Credentials(%q) =\n%#v\nwant\n%#v", tc.user, got, tc.want)
			}
		})
	}
}

// TestCredentialsRealClock checks the zero Now: the expiry is about
// time.Now()+DefaultTTL.
func TestCredentialsRealClock(t *testing.T) {
	before := time.Now().Add(DefaultTTL).Unix()
	s := Config{Secret: "k", URLs: []string{"turn:x"}}.Credentials("n")
	after := time.Now().Add(DefaultTTL).Unix()
	ts, name, ok := strings.Cut(s[0].Username, ":")
	exp, err := strconv.ParseInt(ts, 10, 64)
	if !ok || err != nil || name != "n" || exp < before || exp > after {
		t.Fatalf("username %q: want expiry in [%d, %d] and name n", s[0].Username, before, after)
	}
}

// TestPublishedVectors checks published third-party examples of the scheme.
// Neither coturn's README nor its man page publishes a numeric vector; these
// two come from public code and Q&A and were cross-checked with
// `printf %s USERNAME | openssl dgst -sha1 -hmac SECRET -binary | base64`.
// The integration test (coturn_test.go) is the authoritative check against
// coturn itself.
func TestPublishedVectors(t *testing.T) {
	tests := []struct {
		name, secret, username, want string
	}{
		// A TURN REST credential unit test ("north", the draft's style of
		// example secret).
		{"north bob", "north", "1433895918:bob", "+qCJxktJhPsEAA0wfh7NCKO+G0M="},
		// Stack Overflow question 30745153 (TURN REST API authentication),
		// quoted there without the trailing '='.
		{"my_secret", "my_secret", "1433895918506:my_user_name", "1Dj9XZ5fwvKS6YoQZOoORcFnXaI="},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Credential(tc.secret, tc.username); got != tc.want {
				t.Fatalf("Credential = %q, want %q", got, tc.want)
			}
			if got := expect(tc.secret, tc.username); got != tc.want {
				t.Fatalf("independent HMAC = %q, want %q", got, tc.want)
			}
		})
	}
	// The same vector through Config: expiry 1433895918 = Now + TTL.
	cfg := Config{Secret: "north", URLs: []string{"turn:t"}, TTL: time.Hour,
		Now: func() time.Time { return time.Unix(1433895918-3600, 0) }}
	got := cfg.Credentials("bob")
	want := []ICEServer{{URLs: []string{"turn:t"}, Username: "1433895918:bob", Credential: "+qCJxktJhPsEAA0wfh7NCKO+G0M="}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Credentials = %#v, want %#v", got, want)
	}
}

func TestAppendJSON(t *testing.T) {
	now := func() time.Time { return testNow }
	tests := []struct {
		name string
		cfg  Config
		user string
		want string // exact output after the "prefix:" bytes
	}{
		{
			name: "no URLs",
			cfg:  Config{Secret: "k", Now: now},
			user: "a",
			want: `[]`,
		},
		{
			name: "no secret",
			cfg:  Config{URLs: []string{"turn:t:3478"}, Now: now},
			user: "a",
			want: `[{"urls":["turn:t:3478"]}]`,
		},
		{
			name: "stun and turn",
			cfg:  Config{Secret: "north", URLs: []string{"stun:t:3478", "turn:t:3478"}, TTL: time.Hour, Now: func() time.Time { return time.Unix(1433895918-3600, 0) }},
			user: "bob",
			want: `[{"urls":["stun:t:3478"]},{"urls":["turn:t:3478"],"username":"1433895918:bob","credential":"+qCJxktJhPsEAA0wfh7NCKO+G0M="}]`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.cfg.AppendJSON([]byte("prefix:"), tc.user)
			if string(got) != "prefix:"+tc.want {
				t.Fatalf("AppendJSON = %s, want prefix:%s", got, tc.want)
			}
		})
	}

	// Round trip with names that need escaping: the JSON decodes to exactly
	// Credentials(name), so the browser sends the username that was signed.
	for _, user := range []string{`quote"back\slash`, "</script>&", "tab\tnewline\n", "a\u2028b", "李雷 🙂", "a\xffb"} {
		t.Run("round trip "+strconv.Quote(user), func(t *testing.T) {
			cfg := Config{Secret: "k", URLs: []string{"stun:s", "turn:t"}, Now: now}
			b := cfg.AppendJSON(nil, user)
			if !json.Valid(b) {
				t.Fatalf("invalid JSON %q", b)
			}
			var got []ICEServer
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			if want := cfg.Credentials(user); !reflect.DeepEqual(got, want) {
				t.Fatalf("decoded %#v, want %#v", got, want)
			}
			if got[1].Credential != expect("k", got[1].Username) {
				t.Fatalf("credential does not match the decoded username %q", got[1].Username)
			}
		})
	}

	// dst with spare capacity is extended in place.
	dst := make([]byte, 0, 1024)
	out := Config{URLs: []string{"turn:t"}}.AppendJSON(dst, "a")
	if &out[0] != &dst[:1][0] || !bytes.Equal(out, []byte(`[{"urls":["turn:t"]}]`)) {
		t.Fatalf("AppendJSON did not append into dst: %s", out)
	}
}
