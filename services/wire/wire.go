// Package wire is the contract between the services: the JSON bodies of the
// registry's requests and replies (registry.login, registry.logout,
// registry.join, registry.part and the admin endpoints), the values of the
// users, edges and rooms buckets, the payload of presence events, and the
// edge-to-edge hand-over of a resumed session. Edges and the registry both
// import it and nothing else of each other.
//
// It is shared by the services of this module and is not meant for other
// modules; the README ("NATS subjects and buckets") is the operator-facing
// description of the same contract.
package wire

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"time"
)

// Headers a micro service sets on an error reply (nats.go's micro).
const (
	ErrorCodeHeader = "Nats-Service-Error-Code"
	ErrorHeader     = "Nats-Service-Error"
)

// Error codes of the registry's error replies.
const (
	CodeBadRequest  = "400"
	CodeUnavailable = "503" // stopping: retry with another instance
	CodeInternal    = "500"
	CodeExpired     = "408" // a login taken up after its deadline
)

// LoginRequest is the body of registry.login, sent by an edge for a client
// that asked to log in. A request retried with the same Session is
// idempotent: it returns the entry that the first one created.
type LoginRequest struct {
	// Name is the username as the client sent it (not its token).
	Name string `json:"name"`
	// Edge is the id of the edge that holds the connection.
	Edge string `json:"edge"`
	// Instance identifies the edge process (a random id per start), so that
	// names held by a previous run of an edge with the same id are released.
	Instance string `json:"instance"`
	// Session identifies the session; logout must present it.
	Session string `json:"session"`
	// ResumeHash is the SHA-256 (hex, HashToken) of the resume token the
	// edge gives the client with this login; empty for a session that is
	// not resumable. Only the hash is stored.
	ResumeHash string `json:"resume_hash,omitempty"`
	// Resume is a resume token the client presented: if Name is held by a
	// session whose token it is, this login takes the session over.
	Resume string `json:"resume,omitempty"`
	// Deadline is when the edge stops waiting (and queues the logout of
	// the session, in case the login still lands). A registry refuses a
	// request it takes up later than Deadline plus LoginDeadlineSlack: a
	// retried attempt that waited in its queue must not take the name for
	// a session nobody serves.
	Deadline time.Time `json:"deadline,omitzero"`
}

// LoginDeadlineSlack allows for clocks that differ between an edge and a
// registry.
const LoginDeadlineSlack = 2 * time.Second

// LoginReply answers a LoginRequest. A taken name is a normal reply (OK
// false, Reason ReasonTaken), not a service error.
type LoginReply struct {
	OK     bool   `json:"ok"`
	Reason string `json:"reason,omitempty"`
	// Token is the name token: the user's subject is "user.<Token>".
	Token string `json:"token,omitempty"`
	// Revision is the KV revision of the entry the login created.
	Revision uint64 `json:"revision,omitempty"`
	// Resumed is true when the login took the session over from an earlier
	// connection of the same client (a matching resume token); Prev then
	// names that session, whose edge hands over what it kept for it, and
	// Rooms lists the rooms the session is a member of.
	Resumed bool        `json:"resumed,omitempty"`
	Prev    *SessionRef `json:"prev,omitempty"`
	Rooms   []string    `json:"rooms,omitempty"`
}

// SessionRef names a session and the edge process that holds it.
type SessionRef struct {
	Edge     string `json:"edge"`
	Instance string `json:"instance"`
	Session  string `json:"session"`
}

// Reasons in replies.
const (
	ReasonTaken    = "taken"
	ReasonNotOwner = "not owner"
	ReasonNotFound = "not logged in"
	ReasonBadToken = "resume token does not match"
	ReasonFull     = "room is full"
	ReasonMember   = "already a member"
	ReasonNoMember = "not a member"
	ReasonNoRoom   = "no such room"
)

// LogoutRequest is the body of registry.logout. It is idempotent: a retried
// logout finds the entry gone (OK false, ReasonNotFound) and changes
// nothing.
type LogoutRequest struct {
	Name     string `json:"name"`
	Session  string `json:"session"`
	Edge     string `json:"edge,omitempty"`
	Instance string `json:"instance,omitempty"`
	// Revision, when set, is the revision the session's login (or resume)
	// created: the logout is then a single delete guarded by it.
	Revision uint64 `json:"revision,omitempty"`
	// Reason is why the session ended (events.Reason*): it goes into the
	// presence.offline payload and the logout event.
	Reason string `json:"reason,omitempty"`
	// Rooms are the rooms the edge knows the session to be in; the registry
	// parts them (and any others its view of the rooms bucket has).
	Rooms []string `json:"rooms,omitempty"`
}

// LogoutReply answers a LogoutRequest. OK is true when the entry of that
// session was removed; a name that another session owns is left alone (OK
// false, ReasonNotOwner).
type LogoutReply struct {
	OK     bool   `json:"ok"`
	Reason string `json:"reason,omitempty"`
}

// Entry is the value stored under a name token in the users bucket.
type Entry struct {
	Name     string    `json:"name"`
	Edge     string    `json:"edge"`
	Instance string    `json:"instance"`
	Session  string    `json:"session"`
	Since    time.Time `json:"since"`
	// ResumeHash is the SHA-256 (hex) of the session's resume token; empty
	// for a session that is not resumable.
	ResumeHash string `json:"resume_hash,omitempty"`
	// Prev is the session this one resumed, if it did: a login retried
	// after a lost reply still learns which edge to ask for a hand-over.
	Prev *SessionRef `json:"prev,omitempty"`
}

// EdgeLease is the value an edge heartbeats into the edges bucket under its
// id.
type EdgeLease struct {
	ID       string    `json:"id"`
	Instance string    `json:"instance"`
	Listen   string    `json:"listen,omitempty"`
	At       time.Time `json:"at"`
}

// Presence is the payload of presence.online.<token> and
// presence.offline.<token>, published by the registry when a name is
// claimed or released. Reason (events.Reason*) says why a name went
// offline; Message carries a kick's reason.
type Presence struct {
	Name     string `json:"name"`
	Edge     string `json:"edge"`
	Instance string `json:"instance"`
	Session  string `json:"session"`
	Reason   string `json:"reason,omitempty"`
	Message  string `json:"message,omitempty"`
}

// JoinRequest is the body of registry.join.
type JoinRequest struct {
	Room    string `json:"room"`
	Name    string `json:"name"`
	Edge    string `json:"edge"`
	Session string `json:"session"`
	// Max, when set, is the edge's own room limit; the registry applies
	// the smaller of it and its own.
	Max int `json:"max,omitempty"`
}

// JoinReply answers a JoinRequest: OK with the room's other members, or OK
// false with ReasonFull or ReasonMember.
type JoinReply struct {
	OK     bool     `json:"ok"`
	Reason string   `json:"reason,omitempty"`
	Users  []string `json:"users,omitempty"`
	// Limit is the room limit that applied.
	Limit int `json:"limit,omitempty"`
}

// PartRequest is the body of registry.part.
type PartRequest struct {
	Room    string `json:"room"`
	Name    string `json:"name"`
	Session string `json:"session"`
}

// PartReply answers a PartRequest: OK false with ReasonNoMember when the
// session was not a member.
type PartReply struct {
	OK     bool   `json:"ok"`
	Reason string `json:"reason,omitempty"`
}

// Member is the value stored in the rooms bucket under
// "<room token>.<member token>".
type Member struct {
	Room    string    `json:"room"`
	Name    string    `json:"name"`
	Edge    string    `json:"edge"`
	Session string    `json:"session"`
	Since   time.Time `json:"since"`
}

// HandoverRequest is what the edge of a resumed session asks the edge that
// held the session before ("edge.<id>.handover"): give me what you kept.
type HandoverRequest struct {
	Session  string `json:"session"` // the session being taken over
	Token    string `json:"token"`   // its name token
	Edge     string `json:"edge"`    // the edge that took it over
	Instance string `json:"instance"`
	// Received, when set, is how many frames the client says it received
	// on its last connection after the login reply: the old edge hands
	// over exactly those after them. Unset: it goes by what the client's
	// TCP stack acknowledged.
	Received *int64 `json:"received,omitempty"`
}

// HandoverReply carries a held session's state to its new edge: the frames
// kept for it, in the order they arrived, the peers it had and the names it
// watched with the state last sent for each.
type HandoverReply struct {
	OK      bool            `json:"ok"`
	Reason  string          `json:"reason,omitempty"`
	Frames  []HeldFrame     `json:"frames,omitempty"`
	Peers   []string        `json:"peers,omitempty"`   // name tokens
	Watches map[string]bool `json:"watches,omitempty"` // watched name -> online as last told
	Dropped int             `json:"dropped,omitempty"` // frames that did not fit
}

// HeldFrame is one frame kept for a held session. Seq is the sender's
// sequence ("<sender session>:<n>", header Signal-Seq), by which the new
// edge recognises a frame that reached both edges during the hand-over.
type HeldFrame struct {
	Data  json.RawMessage `json:"data"`
	Seq   string          `json:"seq,omitempty"`
	From  string          `json:"from,omitempty"`  // sender's name token
	Edge  string          `json:"edge,omitempty"`  // sender's edge, told of a refusal
	Reply string          `json:"reply,omitempty"` // the frame's reply subject, which a refusal names
}

// UsersRequest is the body of registry.users: a page of online users whose
// names start with Prefix, in name order, after After, at most Limit
// (zero: DefaultUsersLimit).
type UsersRequest struct {
	Prefix string `json:"prefix,omitempty"`
	After  string `json:"after,omitempty"`
	Limit  int    `json:"limit,omitempty"`
}

// DefaultUsersLimit and MaxUsersLimit bound a registry.users page.
const (
	DefaultUsersLimit = 100
	MaxUsersLimit     = 1000
)

// UsersReply is a page of users; Next, when set, is the After of the next
// page.
type UsersReply struct {
	Users []User `json:"users"`
	Next  string `json:"next,omitempty"`
}

// User is one online user as registry.users lists it.
type User struct {
	Name  string    `json:"name"`
	Edge  string    `json:"edge"`
	Since time.Time `json:"since"`
}

// RoomsRequest is the body of registry.rooms: the members of Room.
type RoomsRequest struct {
	Room string `json:"room"`
}

// RoomsReply lists a room's members.
type RoomsReply struct {
	Room    string   `json:"room"`
	Members []Member `json:"members"`
}

// KickRequest is the body of registry.kick.
type KickRequest struct {
	Name   string `json:"name"`
	Reason string `json:"reason,omitempty"`
}

// KickReply answers a KickRequest: OK when the name was online and has been
// released.
type KickReply struct {
	OK     bool   `json:"ok"`
	Reason string `json:"reason,omitempty"`
	Edge   string `json:"edge,omitempty"`
}

// HashToken is how resume tokens are stored: hex SHA-256.
func HashToken(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// Edge connection names. An edge names its NATS connection
// "edge/<id>/<instance>", so that the NATS server's disconnect event for it
// tells the registry which edge process is gone.
const edgeConnPrefix = "edge/"

// EdgeConnName is the NATS connection name of an edge process.
func EdgeConnName(id, instance string) string { return edgeConnPrefix + id + "/" + instance }

// ErrNotEdgeConn is returned by ParseEdgeConnName for other connections.
var ErrNotEdgeConn = errors.New("wire: not an edge connection name")

// ParseEdgeConnName returns the id and instance of an edge's connection
// name.
func ParseEdgeConnName(name string) (id, instance string, err error) {
	rest, ok := strings.CutPrefix(name, edgeConnPrefix)
	if !ok {
		return "", "", ErrNotEdgeConn
	}
	id, instance, ok = strings.Cut(rest, "/")
	if !ok || id == "" || instance == "" || strings.Contains(instance, "/") {
		return "", "", ErrNotEdgeConn
	}
	return id, instance, nil
}
