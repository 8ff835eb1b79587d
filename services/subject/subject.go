// Package subject is the one place that names the NATS subjects, headers and
// JetStream buckets that the services agree on (README, "NATS subjects and
// buckets").
//
// Names never appear in a subject or a key as they are: they go through
// [names.Token] first, so a user called ">" can never subscribe "user.>",
// and a room called "*" is "room.=Kg", never a wildcard.
package subject

const (
	// UserPrefix prefixes the subject of each logged-in user: "user.<token>".
	// The user's edge subscribes it at login; every frame for the user is
	// published there, as the exact JSON text to write to the socket.
	UserPrefix = "user."

	// RoomPrefix prefixes the subject of each room: "room.<room token>".
	// Edges with members of the room subscribe it; joined, parted and room
	// message frames are published there, with the sender in HeaderFrom.
	RoomPrefix = "room."

	// The registry's micro endpoints (group "registry", queue group
	// "registry"): names and rooms, and the admin endpoints.
	RegistryLogin  = "registry.login"
	RegistryLogout = "registry.logout"
	RegistryJoin   = "registry.join"
	RegistryPart   = "registry.part"
	RegistryUsers  = "registry.users"
	RegistryRooms  = "registry.rooms"
	RegistryKick   = "registry.kick"
	// RegistryGroup is the micro group and queue group of the registry.
	RegistryGroup = "registry"

	// PresenceOnlinePrefix and PresenceOfflinePrefix prefix
	// "presence.online.<token>" and "presence.offline.<token>", published by
	// the registry when a name is claimed or released (with the reason).
	// Edges use them for watchers, and offline also to send leave to the
	// peers of a user whose edge is gone or who was kicked.
	PresenceOnlinePrefix  = "presence.online."
	PresenceOfflinePrefix = "presence.offline."
	PresenceOnlineAll     = PresenceOnlinePrefix + "*"
	PresenceOfflineAll    = PresenceOfflinePrefix + "*"

	// UsersBucket holds who is online: key is the name token, value a JSON
	// record (edge id, session, since). Written by the registry only.
	UsersBucket = "users"
	// EdgesBucket holds one lease per edge, refreshed by the edge's heartbeat.
	EdgesBucket = "edges"
	// RoomsBucket holds room membership: key "<room token>.<member token>",
	// value the member's edge and since. Written by the registry only.
	RoomsBucket = "rooms"

	// EdgePrefix prefixes an edge's own endpoints: "edge.<id>.status"
	// (counters), "edge.<id>.handover" (a resumed session's state).
	EdgePrefix = "edge."

	// DisconnectEvents is where the registry hears that a NATS client
	// connection closed: the system account's
	// "$SYS.ACCOUNT.SIGNAL.DISCONNECT", imported into the SIGNAL account
	// with the prefix "sys" (deploy/nats/accounts.conf, and the embedded
	// server of cmd/signal).
	DisconnectEvents = "sys.$SYS.ACCOUNT.SIGNAL.DISCONNECT"

	// HeaderFrom carries the name token of the sender of a frame on a user
	// or room subject; HeaderEdge the id of the edge that published it. Both
	// are set by the edge, never taken from the client.
	HeaderFrom = "Signal-From"
	HeaderEdge = "Signal-Edge"
	// HeaderSent is when the sender's edge published the frame (Unix
	// nanoseconds), for the relay latency metric.
	HeaderSent = "Signal-Sent"
	// HeaderSeq is "<sender session>:<n>", n counting the frames a session
	// sends: the edge that takes over a resumed session recognises by it a
	// frame that reached both the old and the new edge.
	HeaderSeq = "Signal-Seq"
	// HeaderTrack is "<route>:<m>" on a frame to a user: m counts the frames
	// the sender's connection published to that user since it began the
	// route (a route cache entry; route is the Signal-Seq number of its
	// first frame). The target's edge that sees m jump (a frame lost in
	// transit: a NATS server that died with it in its buffers) tells the
	// sender's edge on EdgeRefused, with HeaderLost.
	HeaderTrack = "Signal-Track"
	// HeaderLost, on a message to EdgeRefused, is how many frames that
	// route lost before the one whose reply subject is the payload.
	HeaderLost = "Signal-Lost"
	// A frame the target's edge refuses (a held session's bounds, a grace
	// that ended) is reported to the sender's edge on EdgeRefused (from the
	// frame's HeaderEdge), with the frame's reply subject as payload; the
	// sender's edge tells its client, as it does for NATS's "no
	// responders" status on the reply subject itself.
)

// User returns the subject of the user whose name token is token.
func User(token string) string { return UserPrefix + token }

// AppendUser appends the subject of token to dst.
func AppendUser(dst []byte, token []byte) []byte {
	dst = append(dst, UserPrefix...)
	return append(dst, token...)
}

// Room returns the subject of the room whose token is token.
func Room(token string) string { return RoomPrefix + token }

// RoomKey returns the rooms bucket's key of a member of a room.
func RoomKey(roomToken, memberToken string) string { return roomToken + "." + memberToken }

// PresenceOnline returns the presence.online subject of token.
func PresenceOnline(token string) string { return PresenceOnlinePrefix + token }

// PresenceOffline returns the presence.offline subject of token.
func PresenceOffline(token string) string { return PresenceOfflinePrefix + token }

// EdgeStatus returns the subject of an edge's status endpoint.
func EdgeStatus(id string) string { return EdgePrefix + id + ".status" }

// EdgeRefused returns the subject on which an edge hears that frames its
// clients sent were refused by the target's edge (payload: the frame's
// reply subject).
func EdgeRefused(id string) string { return EdgePrefix + id + ".refused" }

// EdgeHandover returns the subject of an edge's hand-over endpoint.
func EdgeHandover(id string) string { return EdgePrefix + id + ".handover" }
