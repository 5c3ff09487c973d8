package fakensqd

import "encoding/binary"

// Magic is the 4-byte protocol magic a client sends first on a connection.
const Magic = "  V2"

// Frame types of the NSQ TCP protocol, as used in [Conn.Frame] and
// [AppendFrame].
const (
	FrameTypeResponse int32 = 0 // "OK", "_heartbeat_" or JSON
	FrameTypeError    int32 = 1 // "E_CODE description"
	FrameTypeMessage  int32 = 2 // a message; a producer should never get one
)

// Response frame bodies nsqd sends.
const (
	ResponseOK        = "OK"
	ResponseHeartbeat = "_heartbeat_"
)

// AppendFrame appends the frame [4-byte size][4-byte type][data] to b, with
// size = 4 + len(data), big-endian, and returns the extended slice. Slice the
// result to build a half frame for [Conn.WriteRaw]:
//
//	frame := fakensqd.AppendFrame(nil, fakensqd.FrameTypeResponse, []byte("OK"))
//	c.WriteRaw(frame[:5]) // the size, and one byte of the type
func AppendFrame(b []byte, typ int32, data []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(4+len(data)))
	b = binary.BigEndian.AppendUint32(b, uint32(typ))
	return append(b, data...)
}

// DefaultIdentifyResponse returns a fresh copy of the IDENTIFY response
// [Conn.Handshake] sends, before its overrides: nsqd v1.3.0's answer with
// default options and no upgrades.
func DefaultIdentifyResponse() map[string]any {
	return map[string]any{
		"max_rdy_count":         2500,
		"version":               "1.3.0",
		"max_msg_timeout":       900000,
		"msg_timeout":           60000,
		"tls_v1":                false,
		"deflate":               false,
		"deflate_level":         6,
		"max_deflate_level":     6,
		"snappy":                false,
		"sample_rate":           0,
		"auth_required":         false,
		"output_buffer_size":    16384,
		"output_buffer_timeout": 250,
	}
}
