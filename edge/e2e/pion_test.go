package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"

	"github.com/natsrtc/signal/edge/stack"
	"github.com/natsrtc/signal/services/client"
)

// A WebRTC call between two pion peers, each signaling through its own edge:
// the caller's offer, the callee's answer and both streams of candidates
// cross NATS as the tutorial's JSON (session descriptions and candidates as
// browsers serialize them), ICE connects on loopback, a data channel
// carries a message each way, and the caller's leave reaches the callee.
func TestPionCallAcrossEdges(t *testing.T) {
	s := stack.Start(t, stack.Options{Edges: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()

	api := loopbackAPI()
	alice := newPionPeer(t, api, login(t, s.Edges[0].URL, "alice"), "alice", "bob")
	bob := newPionPeer(t, api, login(t, s.Edges[1].URL, "bob"), "bob", "alice")
	alice.start(ctx)
	bob.start(ctx)

	// The caller opens a data channel that greets on open; the callee
	// answers every message.
	dc, err := alice.pc.CreateDataChannel("chat", nil)
	if err != nil {
		t.Fatal(err)
	}
	dc.OnOpen(func() { _ = dc.SendText("hello from alice") })
	dc.OnMessage(func(m webrtc.DataChannelMessage) { alice.deliver(string(m.Data)) })
	bob.pc.OnDataChannel(func(d *webrtc.DataChannel) {
		d.OnMessage(func(m webrtc.DataChannelMessage) {
			bob.deliver(string(m.Data))
			_ = d.SendText("hello from bob")
		})
	})

	// The call: an offer from alice, sent the moment it is set locally.
	offer, err := alice.pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	called := time.Now()
	alice.sendDescription("offer", alice.pc.LocalDescription())

	for _, p := range []*pionPeer{alice, bob} {
		p.wait(ctx, p.iceConnected, "ICE connected")
	}
	iceDur := time.Since(called)
	for _, p := range []*pionPeer{alice, bob} {
		p.wait(ctx, p.connected, "peer connection connected (DTLS)")
	}
	connDur := time.Since(called)
	t.Logf("call → ICE connected on both peers: %v; → connected (DTLS done): %v", iceDur.Round(time.Millisecond), connDur.Round(time.Millisecond))

	if got := bob.recvData(ctx); got != "hello from alice" {
		t.Errorf("bob got %q over the data channel", got)
	}
	if got := alice.recvData(ctx); got != "hello from bob" {
		t.Errorf("alice got %q over the data channel", got)
	}
	t.Logf("call → data channel round trip: %v", time.Since(called).Round(time.Millisecond))

	// What the callee got is exactly what the caller sent, in order.
	bob.checkRelayed(alice)
	alice.checkRelayed(bob)

	if err := alice.sig.Leave("bob"); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-bob.leave:
		if string(m.Raw) != `{"type":"leave"}` {
			t.Errorf("bob got %s, want {\"type\":\"leave\"}", m.Raw)
		}
	case err := <-bob.errs:
		t.Fatalf("bob: %v", err)
	case <-ctx.Done():
		t.Fatal("bob got no leave")
	}
}

// loopbackAPI is a pion API that gathers and accepts only IPv4 loopback
// host candidates: no STUN, no mDNS, no other interfaces, so the call works
// on a machine without a network.
func loopbackAPI() *webrtc.API {
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() && ip.To4() != nil })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	return webrtc.NewAPI(webrtc.WithSettingEngine(se))
}

// pionPeer is a pion PeerConnection that signals through a client of the
// signaling system, the way a browser page does.
type pionPeer struct {
	t      *testing.T
	name   string
	remote string
	pc     *webrtc.PeerConnection
	sig    *client.Client

	mu       sync.Mutex
	descSent bool     // candidates wait until the offer or answer is sent
	pending  [][]byte // candidates gathered before that
	sentDesc []byte   // the offer or answer, as sent
	sentCand [][]byte // candidates, as sent, in order
	gotDesc  []byte   // the remote offer or answer, as received
	gotCand  [][]byte // remote candidates, as received, in order

	iceConnected chan struct{}
	connected    chan struct{}
	leave        chan client.Message
	data         chan string
	errs         chan error
	wg           sync.WaitGroup
}

func newPionPeer(t *testing.T, api *webrtc.API, sig *client.Client, name, remote string) *pionPeer {
	t.Helper()
	pc, err := api.NewPeerConnection(webrtc.Configuration{}) // no ICE servers
	if err != nil {
		t.Fatal(err)
	}
	p := &pionPeer{
		t: t, name: name, remote: remote, pc: pc, sig: sig,
		iceConnected: make(chan struct{}),
		connected:    make(chan struct{}),
		leave:        make(chan client.Message, 1),
		data:         make(chan string, 16),
		errs:         make(chan error, 16),
	}
	t.Cleanup(func() { _ = pc.Close() })
	var iceOnce, connOnce sync.Once
	pc.OnICEConnectionStateChange(func(s webrtc.ICEConnectionState) {
		if s == webrtc.ICEConnectionStateConnected {
			iceOnce.Do(func() { close(p.iceConnected) })
		}
	})
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		switch s {
		case webrtc.PeerConnectionStateConnected:
			connOnce.Do(func() { close(p.connected) })
		case webrtc.PeerConnectionStateFailed:
			p.fail(fmt.Errorf("%s: peer connection failed", name))
		}
	})
	pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c == nil {
			return // end of candidates: browsers' tutorial clients skip it too
		}
		b, err := json.Marshal(c.ToJSON()) // RTCIceCandidateInit, as a browser sends it
		if err != nil {
			p.fail(err)
			return
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if !p.descSent {
			p.pending = append(p.pending, b)
			return
		}
		p.sendCandidate(b)
	})
	return p
}

// sendCandidate sends one candidate; p.mu is held, so candidates go out in
// the order they were gathered.
func (p *pionPeer) sendCandidate(b []byte) {
	p.sentCand = append(p.sentCand, b)
	if err := p.sig.Candidate(p.remote, json.RawMessage(b)); err != nil {
		p.fail(err)
	}
}

// sendDescription sends the local offer or answer as {"type":...,"sdp":...}
// (what JSON.stringify of an RTCSessionDescription gives), then the
// candidates gathered so far.
func (p *pionPeer) sendDescription(kind string, d *webrtc.SessionDescription) {
	b, err := json.Marshal(d)
	if err != nil {
		p.fail(err)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sentDesc = b
	if kind == "offer" {
		err = p.sig.Offer(p.remote, json.RawMessage(b))
	} else {
		err = p.sig.Answer(p.remote, json.RawMessage(b))
	}
	if err != nil {
		p.fail(err)
		return
	}
	p.descSent = true
	for _, c := range p.pending {
		p.sendCandidate(c)
	}
	p.pending = nil
}

// start handles the peer's signaling messages until ctx ends or the test
// does.
func (p *pionPeer) start(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			m, err := p.sig.Recv(ctx)
			if err != nil {
				if ctx.Err() == nil {
					p.fail(fmt.Errorf("%s: recv: %w", p.name, err))
				}
				return
			}
			if err := p.handle(m); err != nil {
				p.fail(fmt.Errorf("%s: %s: %w", p.name, m.Raw, err))
			}
		}
	}()
	p.t.Cleanup(func() { cancel(); p.wg.Wait() })
}

func (p *pionPeer) handle(m client.Message) error {
	switch m.Type {
	case "offer":
		if m.Name != p.remote {
			return fmt.Errorf("offer from %q, want %q", m.Name, p.remote)
		}
		var d webrtc.SessionDescription
		if err := json.Unmarshal(m.Offer, &d); err != nil {
			return err
		}
		if d.Type != webrtc.SDPTypeOffer {
			return fmt.Errorf("offer of type %v", d.Type)
		}
		p.mu.Lock()
		p.gotDesc = m.Offer
		p.mu.Unlock()
		if err := p.pc.SetRemoteDescription(d); err != nil {
			return err
		}
		answer, err := p.pc.CreateAnswer(nil)
		if err != nil {
			return err
		}
		if err := p.pc.SetLocalDescription(answer); err != nil {
			return err
		}
		p.sendDescription("answer", p.pc.LocalDescription())
	case "answer":
		var d webrtc.SessionDescription
		if err := json.Unmarshal(m.Answer, &d); err != nil {
			return err
		}
		if d.Type != webrtc.SDPTypeAnswer {
			return fmt.Errorf("answer of type %v", d.Type)
		}
		p.mu.Lock()
		p.gotDesc = m.Answer
		p.mu.Unlock()
		return p.pc.SetRemoteDescription(d)
	case "candidate":
		var c webrtc.ICECandidateInit
		if err := json.Unmarshal(m.Candidate, &c); err != nil {
			return err
		}
		p.mu.Lock()
		p.gotCand = append(p.gotCand, m.Candidate)
		p.mu.Unlock()
		// Messages of one sender arrive in order, so the offer or answer
		// is set by now.
		return p.pc.AddICECandidate(c)
	case "leave":
		p.leave <- m
	default:
		return fmt.Errorf("unexpected message")
	}
	return nil
}

func (p *pionPeer) fail(err error) {
	select {
	case p.errs <- err:
	default:
	}
}

func (p *pionPeer) deliver(s string) {
	select {
	case p.data <- s:
	default:
	}
}

// wait waits for ch to close, failing the test on a signaling error or at
// the deadline.
func (p *pionPeer) wait(ctx context.Context, ch <-chan struct{}, what string) {
	p.t.Helper()
	timer := time.NewTimer(step)
	defer timer.Stop()
	select {
	case <-ch:
	case err := <-p.errs:
		p.t.Fatalf("%s, waiting for %s: %v", p.name, what, err)
	case <-timer.C:
		p.t.Fatalf("%s: no %s within %v (ICE %s, connection %s)", p.name, what, step, p.pc.ICEConnectionState(), p.pc.ConnectionState())
	case <-ctx.Done():
		p.t.Fatalf("%s: no %s: %v", p.name, what, ctx.Err())
	}
}

func (p *pionPeer) recvData(ctx context.Context) string {
	p.t.Helper()
	timer := time.NewTimer(step)
	defer timer.Stop()
	select {
	case s := <-p.data:
		return s
	case err := <-p.errs:
		p.t.Fatalf("%s, waiting for a data channel message: %v", p.name, err)
	case <-timer.C:
		p.t.Fatalf("%s: no data channel message within %v", p.name, step)
	case <-ctx.Done():
		p.t.Fatalf("%s: no data channel message: %v", p.name, ctx.Err())
	}
	return ""
}

// checkRelayed checks that p received from's offer or answer byte for byte,
// and from's candidates byte for byte and in order (all that arrived so far
// are the first ones sent).
func (p *pionPeer) checkRelayed(from *pionPeer) {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	from.mu.Lock()
	defer from.mu.Unlock()
	if !bytes.Equal(p.gotDesc, from.sentDesc) {
		p.t.Errorf("%s got the description\n%s\nwant\n%s", p.name, p.gotDesc, from.sentDesc)
	}
	if len(p.gotCand) == 0 {
		p.t.Errorf("%s got no candidates from %s", p.name, from.name)
	}
	if len(p.gotCand) > len(from.sentCand) {
		p.t.Fatalf("%s got %d candidates, %s sent %d", p.name, len(p.gotCand), from.name, len(from.sentCand))
	}
	for i, c := range p.gotCand {
		if !bytes.Equal(c, from.sentCand[i]) {
			p.t.Errorf("%s: candidate %d is %s, want %s", p.name, i, c, from.sentCand[i])
		}
	}
}
