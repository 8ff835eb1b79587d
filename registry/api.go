package registry

import "time"

// LoginRequest is the JSON body of a registry.login request, sent by an edge
// for a client that asked to log in.
type LoginRequest struct {
	// Name is the username as the client sent it (not its token).
	Name string `json:"name"`
	// Edge is the id of the edge that holds the connection.
	Edge string `json:"edge"`
	// Instance identifies the edge process (a random id per start), so that
	// names held by a previous run of an edge with the same id are released.
	Instance string `json:"instance"`
	// Session identifies the connection; logout must present it.
	Session string `json:"session"`
	// ResumeHash is the SHA-256 (hex) of the resume token the edge gives
	// the client with this login. Only the hash is stored.
	ResumeHash string `json:"resume_hash,omitempty"`
	// Resume is a resume token the client presented: if Name is held by a
	// session whose token it is, this login takes the name over.
	Resume string `json:"resume,omitempty"`
}

// LoginReply answers a LoginRequest. A taken name is a normal reply
// (OK false, Reason "taken"), not a service error.
type LoginReply struct {
	OK     bool   `json:"ok"`
	Reason string `json:"reason,omitempty"`
	// Token is the name token: the user's subject is "user.<Token>".
	Token string `json:"token,omitempty"`
	// Revision is the KV revision of the entry the login created.
	Revision uint64 `json:"revision,omitempty"`
	// Resumed is true when the login took the name over from an earlier
	// session of the same client (a matching resume token).
	Resumed bool `json:"resumed,omitempty"`
}

// Reasons in replies.
const (
	ReasonTaken    = "taken"
	ReasonNotOwner = "not owner"
	ReasonNotFound = "not logged in"
	ReasonBadToken = "resume token does not match"
)

// LogoutRequest is the JSON body of a registry.logout request.
type LogoutRequest struct {
	Name    string `json:"name"`
	Session string `json:"session"`
	// Revision, when set, is the revision the session's login (or resume)
	// created: the logout is then a single delete guarded by it.
	Revision uint64 `json:"revision,omitempty"`
}

// LogoutReply answers a LogoutRequest. OK is true when the entry of that
// session was removed; a name that another session owns is left alone
// (OK false, Reason "not owner").
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
	// ResumeHash is the SHA-256 (hex) of the session's resume token.
	ResumeHash string `json:"resume_hash,omitempty"`
}
