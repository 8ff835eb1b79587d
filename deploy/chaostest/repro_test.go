package chaostest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsrtc/signal/services/client"
	"github.com/natsrtc/signal/services/proctest"
)

// Small, targeted reproductions of what the chaos run found, on the same
// cluster (3 NATS nodes from deploy/nats, real binaries), each a few
// seconds. They state the expected behaviour, so they fail while the bug
// is there; like TestChaos they run only with SIGNAL_CHAOS=1.

// small starts the cluster, a registry with regFlags and two edges with
// edgeFlags, for a reproduction.
func small(t *testing.T, regFlags, edgeFlags []string) *cluster {
	t.Helper()
	if testing.Short() || os.Getenv("SIGNAL_CHAOS") == "" {
		t.Skip("set SIGNAL_CHAOS=1 to run the reproductions")
	}
	bin := proctest.Binaries(t)
	logDir := t.TempDir()
	cl := startCluster(t, bin, logDir, loadCreds(t))
	cl.addRegistry("registry-1", regFlags...)
	cl.addEdge("edge-1", edgeFlags...)
	cl.addEdge("edge-2", edgeFlags...)
	t.Cleanup(func() {
		if t.Failed() {
			for _, s := range append(append([]*service{}, cl.edges...), cl.regs...) {
				b, _ := os.ReadFile(s.p.log.Name())
				t.Logf("--- %s (last 3000 bytes):\n%s", s.name, tailString(string(b), 3000))
			}
		}
	})
	return cl
}

func tailString(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// loginAt dials s and logs name in, retrying while the name is taken or the
// system is not ready, for up to within.
func loginAt(t *testing.T, s *service, name string, within time.Duration) *client.Client {
	t.Helper()
	var last error
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := client.Dial(ctx, s.ws, nil)
		if err == nil {
			_, err = c.Login(ctx, name)
			if err == nil {
				cancel()
				t.Cleanup(func() { _ = c.Abort() })
				return c
			}
			_ = c.Abort()
		}
		cancel()
		last = err
		pause(context.Background(), 100*time.Millisecond)
	}
	t.Fatalf("login %s at %s: %v", name, s.id, last)
	return nil
}

// next returns c's next message within d.
func next(c *client.Client, d time.Duration) (client.Message, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return c.Recv(ctx)
}

// expectType reads c until a message of type typ arrives (within d) and
// returns what came before it.
func expectType(c *client.Client, typ string, d time.Duration) (before []string, err error) {
	deadline := time.Now().Add(d)
	for {
		m, err := next(c, time.Until(deadline))
		if err != nil {
			return before, fmt.Errorf("no %q within %v: %w", typ, d, err)
		}
		if m.Type == typ {
			return before, nil
		}
		before = append(before, string(m.Raw))
	}
}

// TestReproNoLeaveAfterKill: alice (edge-1) and bob (edge-2) are in a call;
// edge-2 dies (kill -9) and alice, who does not know yet, sends bob one more
// candidate. The DESIGN says bob's peers get leave when his edge dies;
// alice gets `user "bob" is not online` for the candidate, and then never
// leave: the "no responders" that produced the error also took bob out of
// alice's peers (edge/deliver.go, onReply: s.removePeer), so the
// registry's presence.offline for bob (edge_lost), which is what sends
// leave to a dead user's peers, finds no one to tell. A call whose ICE is
// still trickling when the peer's edge dies never ends for the survivor.
func TestReproNoLeaveAfterKill(t *testing.T) {
	cl := small(t, nil, nil)
	e1, e2 := cl.edges[0], cl.edges[1]
	alice := loginAt(t, e1, "alice", 20*time.Second)
	bob := loginAt(t, e2, "bob", 20*time.Second)
	_ = alice.Offer("bob", "o")
	if _, err := expectType(bob, "offer", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	_ = bob.Answer("alice", "a")
	if _, err := expectType(alice, "answer", 5*time.Second); err != nil {
		t.Fatal(err)
	}

	e2.p.kill()
	killed := time.Now()
	// alice's client trickles candidates, as it would until it hears
	// leave: one every 50ms.
	var got []string
	heard := false
	for k := 0; time.Since(killed) < 3*time.Second && !heard; k++ {
		_ = alice.Candidate("bob", k)
		for {
			m, err := next(alice, 50*time.Millisecond)
			if err != nil {
				break
			}
			got = append(got, string(m.Raw))
			heard = heard || m.Type == "leave"
		}
	}
	if !heard {
		counts := map[string]int{}
		for _, g := range got {
			counts[g]++
		}
		t.Errorf("kill -9 of bob's edge: alice, sending candidates to bob, heard no leave within 3s; she got %v", counts)
	} else {
		t.Logf("alice heard leave %v after the kill (she got: %s)", time.Since(killed).Round(time.Millisecond), strings.Join(got, " "))
	}
}

// TestReproFrozenEdge: 300 users on edge-1, each in a conversation with
// dave on edge-2, to whom their clients write an app message every 200ms
// (stamped with the time it was written). Edge-1 is stopped (SIGSTOP) for
// longer than the lease; its clients, which cannot tell, go on writing.
// Once the lease has released their names, ten of them log in again on
// edge-2 (new connections, the same names). Then edge-1 runs again
// (SIGCONT). Nothing an old connection wrote after its name was released
// may reach dave: it would be relayed as a name that is no longer that
// connection's (for the ten, a name another connection holds). Edge-1
// relays what it reads from those sockets until the registry's
// presence.offline for each name gets through and revokes the connection
// (edge/presence.go, lost); its fence (edge/lease.go) closes the sockets
// with 4001 but does not stop their frames from being relayed (closeWith,
// not revoke), and the relay path does not check the lease itself.
func TestReproFrozenEdge(t *testing.T) {
	lease := 3 * time.Second
	cl := small(t, []string{"-lease", lease.String()}, []string{"-heartbeat", "250ms", "-fence-after", "2s", "-max-conns-per-ip", "-1"})
	e1, e2 := cl.edges[0], cl.edges[1]
	dave := loginAt(t, e2, "dave", 20*time.Second)
	var senders []*client.Client
	for i := range 300 {
		senders = append(senders, loginAt(t, e1, fmt.Sprintf("s%03d", i), 20*time.Second))
	}
	kv, err := cl.js.KeyValue(context.Background(), "users")
	if err != nil {
		t.Fatal(err)
	}
	write := func() {
		now := time.Now().UnixNano()
		for _, c := range senders {
			_ = c.SendRaw([]byte(fmt.Sprintf(`{"type":"message","name":"dave","data":{"w":%d}}`, now)))
		}
	}
	write()
	if err := e1.p.signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	err = waitUntil(context.Background(), lease+5*time.Second, func() error {
		write()
		for _, name := range []string{"s000", "s150", "s299"} {
			_, err := kv.Get(context.Background(), name)
			if !errors.Is(err, jetstream.ErrKeyNotFound) && !errors.Is(err, jetstream.ErrKeyDeleted) {
				return fmt.Errorf("%s still held: %v", name, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	released := time.Now() // every name was free by now
	t.Logf("names free by %v after SIGSTOP", released.Sub(stopped).Round(time.Millisecond))
	for i := range 10 {
		loginAt(t, e2, fmt.Sprintf("s%03d", i), 5*time.Second)
	}
	for time.Since(released) < time.Second {
		write()
		pause(context.Background(), 200*time.Millisecond)
	}
	if err := e1.p.signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// What dave gets for 3s: messages written after the release must not
	// be among them.
	after, total, taken := 0, 0, 0
	var example string
	for {
		m, err := next(dave, 3*time.Second)
		if err != nil {
			break
		}
		var body struct {
			Name string `json:"name"`
			Data struct {
				W int64 `json:"w"`
			} `json:"data"`
		}
		if m.Type != "message" || json.Unmarshal(m.Raw, &body) != nil {
			continue
		}
		total++
		if time.Unix(0, body.Data.W).After(released) {
			after++
			if body.Name < "s010" {
				taken++
			}
			if example == "" {
				example = string(m.Raw)
			}
		}
	}
	t.Logf("dave got %d messages from edge-1's users", total)
	if after > 0 {
		t.Errorf("dave received %d app messages that edge-1's clients wrote after their names were released (%d stamped with one of the ten names logged in again on edge-2), e.g. %s; want none", after, taken, example)
	}
}

// TestReproRefusalsDenied: carol's session on edge-1 is resumable and her
// connection drops: the session is held (-resume-grace 2s) and frames for
// her are kept. Dave (edge-2) sends her 5 candidates meanwhile. The grace
// ends unresumed; edge-1 refuses the 5 kept frames (through their reply
// subject, which is the same for every frame from one sender connection to
// one target), and dave must get "user carol is not online" for each
// (DESIGN, Sessions). He gets one: the edge user may publish to _INBOX.>
// only under allow_responses (deploy/nats/accounts.conf), one reply per
// message delivered, and the five deliveries came before the first
// refusal; the NATS node logs a "Publish Violation" for each of the others.
// The same happens to every burst of refusals (an edge that was stopped, a
// session that ends with frames queued).
func TestReproRefusalsDenied(t *testing.T) {
	cl := small(t, nil, []string{"-resume-grace", "2s"})
	e1, e2 := cl.edges[0], cl.edges[1]
	dave := loginAt(t, e2, "dave", 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	carol, err := client.Dial(ctx, e1.ws, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = carol.SendRaw([]byte(`{"type":"login","name":"carol","resumable":true}`))
	if m, err := carol.Recv(ctx); err != nil || m.Type != "login" || !m.Success {
		t.Fatalf("resumable login: %s %v", m.Raw, err)
	}
	_ = carol.Abort() // dropped: held for the grace
	err = waitUntil(ctx, 5*time.Second, func() error {
		st, err := cl.edgeStatus(e1.id)
		if err != nil || st.Users != 0 {
			return fmt.Errorf("users %d %v", st.Users, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for k := range 5 {
		_ = dave.Candidate("carol", k)
	}
	var errs []string
	for {
		m, err := next(dave, 4*time.Second)
		if err != nil {
			break
		}
		if m.Type == "error" {
			errs = append(errs, m.Message)
		}
	}
	viol := 0
	for k, v := range cl.violations() {
		if strings.HasPrefix(k, "edge Publish _INBOX.") {
			viol += v
		}
	}
	if len(errs) != 5 {
		t.Errorf("5 candidates kept for carol's held session were dropped when its grace ended; dave got %d error frames %q, want 5; the NATS nodes logged %d publish violations of the edge user on _INBOX subjects", len(errs), errs, viol)
	}
}

// TestReproPingerAfterStop: an idle client answers every ping; its edge is
// stopped (SIGSTOP) for less than the lease and continued. The pinger
// counts the time the edge was stopped as the client's silence and cuts
// the socket without pinging it first (edge/pinger.go: idle >
// PingAfter+PongTimeout aborts, whether or not a ping is outstanding), and
// the session ends: its name is released. Here -ping-after 2s
// -pong-timeout 1s and a 3.5s stop; with the defaults (20s, 10s) a stop (a
// GC pause, a VM migration, a starved CPU) of 10s or more cuts the idle
// clients that were last heard from 20s before it.
func TestReproPingerAfterStop(t *testing.T) {
	cl := small(t, []string{"-lease", "15s"}, []string{"-ping-after", "2s", "-pong-timeout", "1s"})
	e1 := cl.edges[0]
	idle := loginAt(t, e1, "idle", 20*time.Second)
	// A ping has come and been answered (the client does by itself): the
	// client is known to be alive.
	pause(context.Background(), 2500*time.Millisecond)
	if err := e1.p.signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	pause(context.Background(), 3500*time.Millisecond)
	if err := e1.p.signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-idle.Done():
		code, reason := idle.CloseStatus()
		t.Errorf("the idle client, which answers pings, was disconnected after the edge was stopped for 3.5s (close %d %q): the pinger took the stop for its silence", code, reason)
	case <-time.After(4 * time.Second):
	}
}

// TestReproFenceDuringElection is a check, not a known bug: with the
// default flags (edge -heartbeat 2.5s, -fence-after 7.5s; registry -lease
// 10s), kill -9 of the NATS node that leads the edges bucket must
// disconnect no one. Until the two others elect a new leader (nats-server's
// Raft election timeout is 4 to 9s) no heartbeat can be written, and an
// edge whose heartbeats fail for -fence-after closes every session (4001):
// the margin is small. Here the election took 4 to 6s in 6 runs out of 6
// and no session was closed; the chaos run saw 8.1s once for the users
// bucket.
func TestReproFenceDuringElection(t *testing.T) {
	cl := small(t, nil, nil)
	var users []*client.Client
	for i := range 20 {
		users = append(users, loginAt(t, cl.edges[i%2], fmt.Sprintf("user%d", i), 20*time.Second))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	leader, _, err := cl.streamLeader(ctx, "KV_edges")
	usersLeader, _, _ := cl.streamLeader(ctx, "KV_users")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	n := cl.node(leader)
	n.p.kill()
	killed := time.Now()
	t.Logf("kill -9 %s, the leader of KV_edges (KV_users: %s)", leader, usersLeader)
	_ = waitUntil(context.Background(), 20*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		l, _, err := cl.streamLeader(ctx, "KV_edges")
		if err != nil || l == "" || l == leader {
			return fmt.Errorf("leader %q %v", l, err)
		}
		return nil
	})
	t.Logf("KV_edges has a new leader %v after the kill", time.Since(killed).Round(time.Millisecond))
	pause(context.Background(), time.Until(killed.Add(15*time.Second)))
	closed := 0
	for _, c := range users {
		select {
		case <-c.Done():
			closed++
		default:
		}
	}
	if closed > 0 {
		code, reason := users[0].CloseStatus()
		b, _ := json.Marshal(map[string]any{"code": code, "reason": reason})
		t.Errorf("%d of %d users were disconnected by the loss of one NATS node (e.g. %s)", closed, len(users), b)
	}
}
