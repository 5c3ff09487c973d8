package nsq

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// MagicV1 is the initial identifier sent when connecting for V1 clients.
var MagicV1 = []byte("  V1")

// MagicV2 is the initial identifier sent when connecting for V2 clients.
var MagicV2 = []byte("  V2")

// Frame types nsqd writes: every frame is [4-byte size][4-byte type][data],
// big-endian, where size counts the type and the data.
const (
	FrameTypeResponse int32 = 0
	FrameTypeError    int32 = 1
	FrameTypeMessage  int32 = 2
)

// DefaultMaxFrameSize caps the frames ReadResponse and ReadUnpackedResponse
// accept; a Conn uses Config.MaxFrameSize instead. It is far above anything
// nsqd sends (its largest frames are messages of at most --max-msg-size,
// 1 MiB by default), and low enough that a server announcing a garbage size
// cannot make the client allocate gigabytes.
const DefaultMaxFrameSize = 32 << 20

// frame bodies the producer sees all the time, kept as constants so that
// matching them allocates nothing.
const (
	respOK        = "OK"
	respHeartbeat = "_heartbeat_"
)

// IsValidTopicName reports whether name is a topic name nsqd accepts:
// 1 to 64 characters of [.a-zA-Z0-9_-], optionally ending in "#ephemeral".
func IsValidTopicName(name string) bool {
	return isValidName(name)
}

// IsValidChannelName reports whether name is a channel name nsqd accepts; the
// rules are those of [IsValidTopicName].
func IsValidChannelName(name string) bool {
	return isValidName(name)
}

const ephemeralSuffix = "#ephemeral"

func isValidName(name string) bool {
	if len(name) < 1 || len(name) > 64 {
		return false
	}
	if n := len(name) - len(ephemeralSuffix); n >= 0 && name[n:] == ephemeralSuffix {
		name = name[:n]
		if name == "" {
			return false
		}
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// ReadResponse reads one frame from r and returns its type and data, still
// packed: [4-byte type][data]. Use [UnpackResponse] to split them. Frames
// larger than [DefaultMaxFrameSize] are refused with a [*FrameError] without
// being allocated.
//
// Otherwise it returns what go-nsq's does: io.EOF when r ends before or
// right after the size, io.ErrUnexpectedEOF when it ends inside the size or
// the body, nil data with any error, and a frame of size 0 to 3 as it is
// (UnpackResponse then says it is too small).
func ReadResponse(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	size, err := checkFrameSize(hdr, 0, DefaultMaxFrameSize)
	if err != nil {
		return nil, err
	}
	buf, err := readBody(r, nil, int(size))
	if err != nil {
		if err == io.EOF && len(buf) > 0 {
			err = io.ErrUnexpectedEOF // cut at a multiple of readBody's step
		}
		return nil, err
	}
	return buf, nil
}

// UnpackResponse splits a packed frame, as returned by [ReadResponse], into
// its type and data.
func UnpackResponse(response []byte) (int32, []byte, error) {
	if len(response) < 4 {
		return -1, nil, errors.New("length of response is too small")
	}
	return int32(binary.BigEndian.Uint32(response)), response[4:], nil
}

// ReadUnpackedResponse reads one frame from r and returns its type and data.
func ReadUnpackedResponse(r io.Reader) (int32, []byte, error) {
	resp, err := ReadResponse(r)
	if err != nil {
		return -1, nil, err
	}
	return UnpackResponse(resp)
}

// FrameError is returned when nsqd (or whatever answered at its address) sends
// bytes that are not a valid frame. The connection is torn down.
type FrameError struct {
	Size   int64  // the announced frame size, when that was the problem
	Reason string // what was wrong
}

func (e *FrameError) Error() string { return "nsq: bad frame from server: " + e.Reason }

// checkFrameSize validates a frame's size prefix: at least minSize, at most
// limit.
func checkFrameSize(hdr [4]byte, minSize, limit int64) (int64, error) {
	if string(hdr[:]) == "HTTP" {
		return 0, &FrameError{Reason: `the server answered "HTTP...": is this nsqd's HTTP port instead of its TCP port?`}
	}
	size := int64(binary.BigEndian.Uint32(hdr[:]))
	if size < minSize {
		return size, &FrameError{Size: size, Reason: fmt.Sprintf("frame size %d is smaller than its %d-byte type", size, minSize)}
	}
	if size > limit {
		return size, &FrameError{Size: size, Reason: fmt.Sprintf("frame size %d is over the %d-byte limit (Config.MaxFrameSize); is the address an nsqd TCP port?", size, limit)}
	}
	return size, nil
}

// readBody reads exactly n bytes into buf (reusing its capacity) and returns
// them, or those it read before an error, with the error. It grows
// the buffer only as data actually arrives, so a lying size prefix costs at
// most what the peer really sends.
func readBody(r io.Reader, buf []byte, n int) ([]byte, error) {
	const step = 64 << 10
	if n <= cap(buf) || n <= step {
		if buf == nil || cap(buf) < n {
			buf = make([]byte, n) // not nil for n == 0: a frame of size 0 is data
		}
		m, err := io.ReadFull(r, buf[:n])
		return buf[:m], err
	}
	buf = buf[:0]
	for len(buf) < n {
		chunk := min(n-len(buf), max(len(buf), step))
		if cap(buf)-len(buf) < chunk {
			buf = append(buf, make([]byte, chunk)...)[:len(buf)]
		}
		m, err := io.ReadFull(r, buf[len(buf):len(buf)+chunk])
		buf = buf[:len(buf)+m]
		if err != nil {
			return buf, err
		}
	}
	return buf, nil
}

// frameReader reads frames from nsqd, reusing one buffer. The data it
// returns is valid until the next call. Owned by one goroutine at a time.
type frameReader struct {
	r     io.Reader
	limit int64
	hdr   [8]byte
	buf   []byte
}

func (fr *frameReader) next() (int32, []byte, error) {
	if _, err := io.ReadFull(fr.r, fr.hdr[:4]); err != nil {
		return -1, nil, err
	}
	size, err := checkFrameSize([4]byte(fr.hdr[:4]), 4, fr.limit)
	if err != nil {
		return -1, nil, err
	}
	if _, err := io.ReadFull(fr.r, fr.hdr[4:8]); err != nil {
		return -1, nil, unexpectedEOF(err)
	}
	typ := int32(binary.BigEndian.Uint32(fr.hdr[4:8]))
	fr.buf, err = readBody(fr.r, fr.buf, int(size-4))
	if err != nil {
		return -1, nil, unexpectedEOF(err)
	}
	return typ, fr.buf, nil
}

// unexpectedEOF turns an EOF inside a frame into io.ErrUnexpectedEOF: the peer
// closed the connection half way through a frame.
func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
