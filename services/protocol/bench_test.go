package protocol

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// typicalSDP returns a realistic SDP offer of roughly 2 KB.
func typicalSDP() string {
	lines := []string{
		"v=0",
		"o=- 4611731400430051336 2 IN IP4 127.0.0.1",
		"s=-",
		"t=0 0",
		"a=group:BUNDLE 0 1",
		"a=extmap-allow-mixed",
		"a=msid-semantic: WMS stream",
		"m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
		"c=IN IP4 0.0.0.0",
		"a=rtcp:9 IN IP4 0.0.0.0",
		"a=ice-ufrag:EsAw",
		"a=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y",
		"a=ice-options:trickle",
		"a=fingerprint:sha-256 DA:7B:57:DC:28:CE:04:4F:31:79:85:C4:31:67:EB:27:58:29:ED:77:2A:0D:24:AE:ED:D3:33:B7:87:38:9B:C4",
		"a=setup:actpass",
		"a=mid:0",
		"a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
		"a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
		"a=sendrecv",
		"a=msid:stream audio-track",
		"a=rtcp-mux",
		"a=rtpmap:111 opus/48000/2",
		"a=rtcp-fb:111 transport-cc",
		"a=fmtp:111 minptime=10;useinbandfec=1",
		"a=rtpmap:63 red/48000/2",
		"a=ssrc:1001 cname:4TOk42mSjXCkVIa6",
		"a=candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx raddr 0.0.0.0 rport 0 generation 0",
		"a=candidate:2999745851 1 udp 2122260223 192.168.56.1 56143 typ host generation 0 network-id 1",
		"a=candidate:1425264631 1 tcp 1518280447 192.168.56.1 9 typ host tcptype active generation 0",
		"a=candidate:3065616379 1 udp 41885439 198.51.100.20 3478 typ relay raddr 203.0.113.7 rport 46154",
		"m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103",
		"c=IN IP4 0.0.0.0",
		"a=rtcp:9 IN IP4 0.0.0.0",
		"a=ice-ufrag:EsAw",
		"a=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y",
		"a=ice-options:trickle",
		"a=fingerprint:sha-256 DA:7B:57:DC:28:CE:04:4F:31:79:85:C4:31:67:EB:27:58:29:ED:77:2A:0D:24:AE:ED:D3:33:B7:87:38:9B:C4",
		"a=setup:actpass",
		"a=mid:1",
		"a=extmap:14 urn:ietf:params:rtp-hdrext:toffset",
		"a=sendrecv",
		"a=msid:stream video-track",
		"a=rtcp-mux",
		"a=rtcp-rsize",
		"a=rtpmap:96 VP8/90000",
		"a=rtcp-fb:96 goog-remb",
		"a=rtcp-fb:96 transport-cc",
		"a=rtcp-fb:96 ccm fir",
		"a=rtcp-fb:96 nack",
		"a=rtcp-fb:96 nack pli",
		"a=rtpmap:97 rtx/90000",
		"a=fmtp:97 apt=96",
		"a=rtpmap:102 H264/90000",
		"a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
		"a=ssrc-group:FID 2001 2002",
		"a=ssrc:2001 cname:4TOk42mSjXCkVIa6",
		"a=ssrc:2002 cname:4TOk42mSjXCkVIa6",
	}
	return strings.Join(lines, "\r\n") + "\r\n"
}

func typicalOffer() (frame, payload []byte) {
	payload, err := json.Marshal(map[string]string{"type": "offer", "sdp": typicalSDP()})
	if err != nil {
		panic(err)
	}
	return []byte(fmt.Sprintf(`{"type":"offer","name":"bob","offer":%s}`, payload)), payload
}

const typicalCandidate = `{"type":"candidate","name":"bob","candidate":{"candidate":"candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx raddr 0.0.0.0 rport 0 generation 0 ufrag EsAw network-cost 999","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"EsAw"}}`

func BenchmarkParse(b *testing.B) {
	offer, _ := typicalOffer()
	for _, bc := range []struct {
		name string
		data []byte
	}{
		{"offer", offer},
		{"candidate", []byte(typicalCandidate)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var f Frame
			if err := Parse(bc.data, &f); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(bc.data)))
			b.ReportAllocs()
			for b.Loop() {
				if err := Parse(bc.data, &f); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAppendOffer(b *testing.B) {
	_, payload := typicalOffer()
	name := []byte("alice")
	dst := make([]byte, 0, 8192)
	b.SetBytes(int64(len(AppendOffer(nil, payload, name))))
	b.ReportAllocs()
	for b.Loop() {
		dst = AppendOffer(dst[:0], payload, name)
	}
}

func BenchmarkAppendString(b *testing.B) {
	s := []byte("李雷 (alice) <alice@example.com> \"quoted\"")
	dst := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		dst = AppendString(dst[:0], s)
	}
}
