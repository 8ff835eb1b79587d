package edge

import (
	"sync"

	"github.com/natsrtc/signal/services/protocol"
)

// Peers are a set: a session's peers are every user it exchanged an offer
// or answer with (either way) and has not sent or received leave from. When
// the session ends, each of them gets leave; for one call that is the
// tutorial's rule, for a mesh call it ends the call for everyone. The
// edge-wide index finds the local sessions whose peer a user is, for the
// registry's presence.offline when that user's own edge cannot send leave
// (it died, or the user was kicked).

// addPeer records tok as a peer of s.
func (s *session) addPeer(tok string) {
	s.mu.Lock()
	s.addPeerLocked(tok)
	s.mu.Unlock()
}

// removePeer forgets tok as a peer of s; false when it was none.
func (s *session) removePeer(tok string) bool {
	s.mu.Lock()
	_, was := s.peers[tok]
	s.removePeerLocked(tok)
	s.mu.Unlock()
	return was
}

// addPeerLocked adds tok to the set and the index; s.mu is held (the lock
// order is s.mu, then the index's: the index never calls into a session).
func (s *session) addPeerLocked(tok string) {
	if _, ok := s.peers[tok]; ok || s.state == sesEnded || tok == s.token {
		return
	}
	if s.peers == nil {
		s.peers = make(map[string]struct{}, 1)
	}
	s.peers[tok] = struct{}{}
	s.e.peers.add(tok, s)
}

// removePeerLocked removes tok from the set and the index; s.mu is held.
func (s *session) removePeerLocked(tok string) {
	if _, ok := s.peers[tok]; ok {
		delete(s.peers, tok)
		s.e.peers.remove(tok, s)
	}
}

// peerEffect applies what a frame from the user whose token is from does
// to the peer set: an offer or answer adds from, leave removes it. s.mu is
// held.
func (s *session) peerEffect(t protocol.Type, from string) {
	if from == "" {
		return
	}
	switch t {
	case protocol.TypeOffer, protocol.TypeAnswer:
		s.addPeerLocked(from)
	case protocol.TypeLeave:
		s.removePeerLocked(from)
	}
}

// peerIndex maps a user's token to the local sessions it is a peer of.
type peerIndex struct {
	mu  sync.Mutex
	idx map[string]map[*session]struct{}
}

func (p *peerIndex) init() { p.idx = make(map[string]map[*session]struct{}) }

func (p *peerIndex) add(tok string, s *session) {
	p.mu.Lock()
	set := p.idx[tok]
	if set == nil {
		set = make(map[*session]struct{}, 1)
		p.idx[tok] = set
	}
	set[s] = struct{}{}
	p.mu.Unlock()
}

func (p *peerIndex) remove(tok string, s *session) {
	p.mu.Lock()
	if set := p.idx[tok]; set != nil {
		delete(set, s)
		if len(set) == 0 {
			delete(p.idx, tok)
		}
	}
	p.mu.Unlock()
}

// take returns the sessions whose peer tok is and forgets them.
func (p *peerIndex) take(tok string) []*session {
	p.mu.Lock()
	set := p.idx[tok]
	delete(p.idx, tok)
	p.mu.Unlock()
	out := make([]*session, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	return out
}
