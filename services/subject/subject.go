// Package subject is the one place that names the NATS subjects, headers and
// JetStream KV buckets that the services agree on (DESIGN.md, "NATS contract").
//
// Names never appear in a subject or a key as they are: they go through
// [names.Token] first, so a user called ">" can never subscribe "user.>".
package subject

const (
	// UserPrefix prefixes the subject of each logged-in user: "user.<token>".
	// The user's edge subscribes it at login; every frame for the user is
	// published there, as the exact JSON text to write to the socket.
	UserPrefix = "user."

	// RegistryLogin and RegistryLogout are the registry's micro endpoints
	// (group "registry", queue group "registry").
	RegistryLogin  = "registry.login"
	RegistryLogout = "registry.logout"
	// RegistryGroup is the micro group and queue group of the registry.
	RegistryGroup = "registry"

	// PresenceOfflinePrefix prefixes "presence.offline.<token>", published by
	// the registry when it releases a name whose connection did not log out
	// itself (its edge's lease ran out, or it was taken over). Edges use it to
	// send "leave" to the peers of that user.
	PresenceOfflinePrefix = "presence.offline."
	// PresenceOfflineAll subscribes every PresenceOffline event.
	PresenceOfflineAll = PresenceOfflinePrefix + ">"

	// UsersBucket holds who is online: key is the name token, value a JSON
	// record (edge id, session, since). Written by the registry only.
	UsersBucket = "users"
	// EdgesBucket holds one lease per edge, refreshed by the edge's heartbeat.
	EdgesBucket = "edges"

	// HeaderFrom carries the name token of the sender of a frame on a user
	// subject; HeaderEdge the id of the edge that published it. Both are set
	// by the edge, never taken from the client.
	HeaderFrom = "Signal-From"
	HeaderEdge = "Signal-Edge"
	// HeaderSent is when the sender's edge published the frame (Unix
	// nanoseconds), for the relay latency metric.
	HeaderSent = "Signal-Sent"

	// HeaderControl marks a message on a user subject that is for the
	// user's edge, not the user's socket; it is never written to a client.
	// ControlPeer hands a resumed session the peer (HeaderPeer, a name
	// token) that its previous connection had.
	HeaderControl = "Signal-Control"
	HeaderPeer    = "Signal-Peer"
	ControlPeer   = "peer"
)

// User returns the subject of the user whose name token is token.
func User(token string) string { return UserPrefix + token }

// AppendUser appends the subject of token to dst.
func AppendUser(dst []byte, token []byte) []byte {
	dst = append(dst, UserPrefix...)
	return append(dst, token...)
}

// PresenceOffline returns the presence.offline subject of token.
func PresenceOffline(token string) string { return PresenceOfflinePrefix + token }
