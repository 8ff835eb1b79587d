// Package protocol implements the wire format of the signaling server: the
// classic WebRTC-tutorial JSON protocol carried in WebSocket text frames.
//
// Clients send
//
//	{"type":"login","name":N}
//	{"type":"offer","name":T,"offer":X}
//	{"type":"answer","name":T,"answer":X}
//	{"type":"candidate","name":T,"candidate":X}
//	{"type":"leave","name":T}
//
// and the extensions (rooms, presence, app messages)
//
//	{"type":"join","room":R}
//	{"type":"part","room":R}
//	{"type":"message","name":T,"data":X}
//	{"type":"message","room":R,"data":X}
//	{"type":"watch","names":[N,...]}
//	{"type":"unwatch","names":[N,...]}
//
// where X is any JSON value that is relayed byte-for-byte. The server sends
// frames built by the Append* functions. The README's protocol tables are
// the contract.
//
// This is the per-message hot path. Parse and all appenders allocate nothing
// in steady state: Parse reuses the Frame's scratch buffer, and the appenders
// write into the caller's dst (they allocate only when dst lacks capacity).
//
// # Validation rules
//
// Parse accepts exactly the texts that encoding/json.Valid accepts (RFC 8259
// grammar, whitespace limited to space, tab, CR and LF, raw bytes >= 0x80
// inside strings accepted even if they are not valid UTF-8), including its
// nesting limit: a text may nest at most 10000 arrays/objects, counting the
// top-level object itself. Deeper nesting is reported as ErrInvalidJSON, just
// as encoding/json.Valid reports false for it. Parsing is iterative, so even
// absurdly deep input cannot overflow the stack.
//
// Strings are decoded like encoding/json decodes them: escapes (including
// UTF-16 surrogate pairs) are decoded to UTF-8, while lone surrogates and
// invalid UTF-8 bytes each become U+FFFD.
package protocol
