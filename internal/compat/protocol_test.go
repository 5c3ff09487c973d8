package compat

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	gonsq "github.com/nsqio/go-nsq"
	nsq "github.com/nsqkit/go-nsq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// frame returns a frame as nsqd writes it: size, type, data.
func frame(size uint32, typ int32, data string) []byte {
	b := binary.BigEndian.AppendUint32(nil, size)
	b = binary.BigEndian.AppendUint32(b, uint32(typ))
	return append(b, data...)
}

func fullFrame(typ int32, data string) []byte { return frame(uint32(4+len(data)), typ, data) }

// readInputs returns byte streams for the response readers: whole frames,
// frames of size 0 to 3, empty and cut-short streams (cut at every byte of
// a small frame, and around each 64 KiB of a large one).
func readInputs() map[string][]byte {
	in := map[string][]byte{
		"empty":            nil,
		"OK":               fullFrame(nsq.FrameTypeResponse, "OK"),
		"error":            fullFrame(nsq.FrameTypeError, "E_INVALID x"),
		"message":          fullFrame(nsq.FrameTypeMessage, "msg"),
		"type only":        fullFrame(nsq.FrameTypeResponse, ""),
		"two frames":       append(fullFrame(nsq.FrameTypeResponse, "OK"), fullFrame(nsq.FrameTypeResponse, "_heartbeat_")...),
		"size 0":           {0, 0, 0, 0},
		"size 0 then more": append([]byte{0, 0, 0, 0}, fullFrame(nsq.FrameTypeResponse, "OK")...),
		"size 1":           {0, 0, 0, 1, 'a'},
		"size 2":           {0, 0, 0, 2, 'a', 'b'},
		"size 3":           {0, 0, 0, 3, 'a', 'b', 'c'},
		"size 3 cut":       {0, 0, 0, 3, 'a'},
		"size 2 no data":   {0, 0, 0, 2},
		"large":            fullFrame(nsq.FrameTypeResponse, strings.Repeat("y", 200<<10)),
	}
	small := fullFrame(nsq.FrameTypeResponse, "_heartbeat_")
	for cut := 1; cut < len(small); cut++ {
		in[fmt.Sprintf("small cut at %d", cut)] = small[:cut]
	}
	large := in["large"]
	for _, cut := range []int{8, 9, 4 + 64<<10, 8 + 64<<10 - 1, 8 + 64<<10, 8 + 64<<10 + 1, 4 + 128<<10, 8 + 128<<10, len(large) - 1} {
		in[fmt.Sprintf("large cut at %d", cut)] = large[:cut]
	}
	return in
}

// sameErr reports whether two errors are the same value, or (for the
// errors each library makes itself) have the same text.
func sameErr(a, b error) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a == b || a.Error() == b.Error()
}

// readers gives the stream whole or one byte at a time.
var readers = map[string]func([]byte) io.Reader{
	"whole":    func(b []byte) io.Reader { return bytes.NewReader(b) },
	"one byte": func(b []byte) io.Reader { return iotest.OneByteReader(bytes.NewReader(b)) },
}

// TestReadResponse reads the same streams with both libraries' ReadResponse,
// ReadUnpackedResponse and UnpackResponse, frame after frame until an
// error, and compares every result.
func TestReadResponse(t *testing.T) {
	for name, raw := range readInputs() {
		for rname, reader := range readers {
			t.Run(name+"/"+rname, func(t *testing.T) {
				g, o := reader(raw), reader(raw)
				for i := 0; ; i++ {
					gresp, gerr := gonsq.ReadResponse(g)
					oresp, oerr := nsq.ReadResponse(o)
					require.Equal(t, gresp, oresp, "frame %d", i)
					require.Equal(t, gresp == nil, oresp == nil, "frame %d: nil or not", i)
					require.True(t, sameErr(gerr, oerr), "frame %d: go-nsq %v, ours %v", i, gerr, oerr)
					if gerr != nil {
						break
					}
					gt, gd, gerr := gonsq.UnpackResponse(gresp)
					ot, od, oerr := nsq.UnpackResponse(oresp)
					require.Equal(t, gt, ot)
					require.Equal(t, gd, od)
					require.Equal(t, gd == nil, od == nil, "nil or not")
					require.True(t, sameErr(gerr, oerr), "go-nsq %v, ours %v", gerr, oerr)
				}

				g, o = reader(raw), reader(raw)
				for i := 0; ; i++ {
					gt, gd, gerr := gonsq.ReadUnpackedResponse(g)
					ot, od, oerr := nsq.ReadUnpackedResponse(o)
					require.Equal(t, gt, ot, "frame %d", i)
					require.Equal(t, gd, od, "frame %d", i)
					require.Equal(t, gd == nil, od == nil, "frame %d: nil or not", i)
					require.True(t, sameErr(gerr, oerr), "frame %d: go-nsq %v, ours %v", i, gerr, oerr)
					if gerr != nil {
						break
					}
				}
			})
		}
	}
}

// The frame size cap is deliberate: a size over it (or over 2 GiB, which
// go-nsq reads as negative) fails at once with a *FrameError, without
// allocating, where go-nsq allocates the announced size.
func TestReadResponseFrameCap(t *testing.T) {
	for _, size := range []uint32{nsq.DefaultMaxFrameSize + 1, 1 << 31, 1<<32 - 1} {
		raw := frame(size, nsq.FrameTypeResponse, "short")
		_, gerr := gonsq.ReadResponse(bytes.NewReader(raw))
		require.Error(t, gerr, "go-nsq, size %d", size)
		resp, err := nsq.ReadResponse(bytes.NewReader(raw))
		assert.Nil(t, resp)
		var ferr *nsq.FrameError
		require.True(t, errors.As(err, &ferr), "size %d: %v", size, err)
		assert.Equal(t, int64(size), ferr.Size)
	}
	// At the cap, both read what arrives.
	raw := frame(nsq.DefaultMaxFrameSize, nsq.FrameTypeResponse, "short")
	_, gerr := gonsq.ReadResponse(bytes.NewReader(raw))
	_, oerr := nsq.ReadResponse(bytes.NewReader(raw))
	assert.Same(t, io.ErrUnexpectedEOF, gerr)
	assert.Same(t, io.ErrUnexpectedEOF, oerr)
}
