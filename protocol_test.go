package nsq

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/nsqkit/go-nsq/internal/fakensqd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestValidNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"topic", true},
		{"Az09._-", true},
		{"...", true},
		{strings.Repeat("a", 64), true},
		{strings.Repeat("a", 65), false},
		{"a#ephemeral", true},
		{strings.Repeat("a", 54) + "#ephemeral", true}, // 64 in all
		{strings.Repeat("a", 55) + "#ephemeral", false},
		{"#ephemeral", false},
		{"a#eph", false},
		{"a#ephemeralx", false},
		{"a#ephemeral#ephemeral", false},
		{"a#Ephemeral", false},
		{"#", false},
		{"", false},
		{"a b", false},
		{" a", false},
		{"a/b", false},
		{"a:b", false},
		{"a\n", false},
		{"a\x00", false},
		{"é", false},
		{"tópico", false},
		{"日本", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.ok, IsValidTopicName(tc.name), "IsValidTopicName(%q)", tc.name)
			assert.Equal(t, tc.ok, IsValidChannelName(tc.name), "IsValidChannelName(%q)", tc.name)
		})
	}
}

// be32 returns n as a 4-byte big-endian size.
func be32(n int) string {
	return string(binary.BigEndian.AppendUint32(nil, uint32(n)))
}

func TestCommandWire(t *testing.T) {
	ident, err := Identify(map[string]any{"b": 1, "a": "x"})
	require.NoError(t, err)
	auth, err := Auth("s3cret")
	require.NoError(t, err)
	mpub, err := MultiPublish("t", [][]byte{[]byte("a"), []byte("bc")})
	require.NoError(t, err)

	for _, tc := range []struct {
		name string
		cmd  *Command
		wire string
		str  string
	}{
		{"publish", Publish("t", []byte("hello")), "PUB t\n" + be32(5) + "hello", "PUB t"},
		{"publish_empty_body", Publish("t", []byte{}), "PUB t\n" + be32(0), "PUB t"},
		{"deferred_publish", DeferredPublish("t", 1500*time.Millisecond, []byte("x")), "DPUB t 1500\n" + be32(1) + "x", "DPUB t 1500"},
		{"deferred_publish_sub_ms", DeferredPublish("t", 1999*time.Microsecond, []byte("x")), "DPUB t 1\n" + be32(1) + "x", "DPUB t 1"},
		{"deferred_publish_zero", DeferredPublish("t", 0, []byte("x")), "DPUB t 0\n" + be32(1) + "x", "DPUB t 0"},
		{"multi_publish", mpub,
			"MPUB t\n" + be32(15) + be32(2) + be32(1) + "a" + be32(2) + "bc", "MPUB t"},
		{"identify", ident, "IDENTIFY\n" + be32(15) + `{"a":"x","b":1}`, "IDENTIFY"},
		{"auth", auth, "AUTH\n" + be32(6) + "s3cret", "AUTH"},
		{"nop", Nop(), "NOP\n", "NOP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			n, err := tc.cmd.WriteTo(&buf)
			require.NoError(t, err)
			assert.Equal(t, tc.wire, buf.String())
			assert.Equal(t, int64(len(tc.wire)), n)
			assert.Equal(t, tc.str, tc.cmd.String())
		})
	}
}

func TestMultiPublishCopiesBodies(t *testing.T) {
	b := [][]byte{[]byte("abc")}
	cmd, err := MultiPublish("t", b)
	require.NoError(t, err)
	b[0][0] = 'X'
	assert.Equal(t, be32(1)+be32(3)+"abc", string(cmd.Body))
}

func TestCommandWriteToError(t *testing.T) {
	boom := errors.New("boom")
	n, err := Publish("t", []byte("hello")).WriteTo(failingWriter{boom})
	assert.Same(t, boom, err)
	assert.Zero(t, n)
}

type failingWriter struct{ err error }

func (w failingWriter) Write([]byte) (int, error) { return 0, w.err }

// TestDirectEncoders checks that the producer's direct encoders write
// exactly what Command.WriteTo writes for the same command, whatever the
// state of the write buffer, copying or gathering.
func TestDirectEncoders(t *testing.T) {
	topics := []string{"t", strings.Repeat("T", 64), "a#ephemeral"}
	big := bytes.Repeat([]byte("0123456789"), 10<<10) // 100 KiB: larger than any buffer below
	bodySets := [][][]byte{
		{[]byte("x")},
		{[]byte("a"), []byte("bc"), []byte("def")},
		{big, []byte("after big")},
		{bytes.Repeat([]byte("g"), gatherMin), []byte("small"), bytes.Repeat([]byte("h"), 3*gatherMin)}, // gathered
	}
	delays := []time.Duration{0, 999 * time.Microsecond, 1500 * time.Millisecond, time.Hour}
	writers := []struct {
		name    string
		size    int
		prefill int  // bytes already buffered
		gather  bool // large bodies referenced, not copied
	}{
		{"small_buffer", 16, 0, false},
		{"default_buffer", 64 << 10, 0, false},
		{"almost_full", 4096, 4096 - 50, false}, // less than maxHeader free: the header flushes first
		{"partly_full", 4096, 1000, false},
		{"gather_small_buffer", 16, 0, true},
		{"gather_default_buffer", 64 << 10, 0, true},
		{"gather_almost_full", 4096, 4096 - 50, true},
		{"gather_partly_full", 4096, 1000, true},
	}
	// encode runs f on a writer in the given state and returns what it
	// wrote after the prefill.
	encode := func(t *testing.T, size, prefill int, gather bool, f func(w *wireBuf) error) []byte {
		t.Helper()
		var out bytes.Buffer
		w := newWireBuf(&out, size)
		w.gather = gather
		w.Write(bytes.Repeat([]byte{'P'}, prefill))
		require.NoError(t, f(w))
		require.NoError(t, w.flush())
		return out.Bytes()[prefill:]
	}
	wire := func(c *Command) []byte {
		var b bytes.Buffer
		c.WriteTo(&b)
		return b.Bytes()
	}
	for _, wr := range writers {
		t.Run(wr.name, func(t *testing.T) {
			for _, topic := range topics {
				for _, bodies := range bodySets {
					for _, body := range bodies {
						got := encode(t, wr.size, wr.prefill, wr.gather, func(w *wireBuf) error { return writePUB(w, topic, body) })
						require.Equal(t, wire(Publish(topic, body)), got, "writePUB(%q, %d bytes)", topic, len(body))
						for _, d := range delays {
							got := encode(t, wr.size, wr.prefill, wr.gather, func(w *wireBuf) error { return writeDPUB(w, topic, d, body) })
							require.Equal(t, wire(DeferredPublish(topic, d, body)), got, "writeDPUB(%q, %s, %d bytes)", topic, d, len(body))
						}
					}
					cmd, err := MultiPublish(topic, bodies)
					require.NoError(t, err)
					want := wire(cmd)
					got := encode(t, wr.size, wr.prefill, wr.gather, func(w *wireBuf) error {
						err := writeMPUBHeader(w, topic, mpubBodySize(bodies), len(bodies))
						for _, b := range bodies {
							if err == nil {
								err = writeMPUBMessage(w, b)
							}
						}
						return err
					})
					require.Equal(t, want, got, "writeMPUBHeader+writeMPUBMessage(%q, %d bodies)", topic, len(bodies))
					got = encode(t, wr.size, wr.prefill, wr.gather, func(w *wireBuf) error {
						return writeMPUBEncoded(w, topic, encodeMPUBBody(bodies, mpubBodySize(bodies)))
					})
					require.Equal(t, want, got, "writeMPUBEncoded(%q, %d bodies)", topic, len(bodies))
				}
			}
		})
	}
}

// TestDirectEncodersErrors checks that the encoders report a failing writer.
func TestDirectEncodersErrors(t *testing.T) {
	boom := errors.New("boom")
	body := bytes.Repeat([]byte("x"), 100)
	big := make([]byte, 2*gatherMin)
	for name, f := range map[string]func(w *wireBuf) error{
		"writePUB":         func(w *wireBuf) error { return writePUB(w, "t", body) },
		"writeDPUB":        func(w *wireBuf) error { return writeDPUB(w, "t", time.Second, body) },
		"writeMPUBMessage": func(w *wireBuf) error { return writeMPUBMessage(w, body) },
		"writeMPUBEncoded": func(w *wireBuf) error {
			return writeMPUBEncoded(w, "t", encodeMPUBBody([][]byte{body}, mpubBodySize([][]byte{body})))
		},
		"writeMPUBHeader":   func(w *wireBuf) error { w.Write(make([]byte, 4000)); return writeMPUBHeader(w, "t", 10, 1) },
		"writePUB_flushing": func(w *wireBuf) error { w.Write(make([]byte, 4000)); return writePUB(w, "t", []byte("x")) },
		"writePUB_gathered": func(w *wireBuf) error { w.gather = true; return writePUB(w, "t", big) },
		"after_an_error": func(w *wireBuf) error {
			w.Write(make([]byte, 4000))
			writePUB(w, "t", []byte("x")) // fails, flushing
			return writePUB(w, "t", []byte("y"))
		},
	} {
		t.Run(name, func(t *testing.T) {
			w := newWireBuf(failingWriter{boom}, 4096)
			err := f(w)
			if err == nil {
				err = w.flush()
			}
			assert.Same(t, boom, err)
		})
	}
}

// testFrame returns the frame [size][type][data].
func testFrame(typ int32, data string) []byte {
	return fakensqd.AppendFrame(nil, typ, []byte(data))
}

func TestReadResponse(t *testing.T) {
	t.Run("frames", func(t *testing.T) {
		r := bytes.NewReader(bytes.Join([][]byte{
			testFrame(FrameTypeResponse, "OK"),
			testFrame(FrameTypeError, "E_INVALID x"),
			testFrame(FrameTypeMessage, "msg"),
			testFrame(FrameTypeResponse, ""),
		}, nil))
		resp, err := ReadResponse(r)
		require.NoError(t, err)
		assert.Equal(t, "\x00\x00\x00\x00OK", string(resp), "ReadResponse keeps the type")
		typ, data, err := UnpackResponse(resp)
		require.NoError(t, err)
		assert.Equal(t, FrameTypeResponse, typ)
		assert.Equal(t, "OK", string(data))

		typ, data, err = ReadUnpackedResponse(r)
		require.NoError(t, err)
		assert.Equal(t, FrameTypeError, typ)
		assert.Equal(t, "E_INVALID x", string(data))

		typ, data, err = ReadUnpackedResponse(r)
		require.NoError(t, err)
		assert.Equal(t, FrameTypeMessage, typ)
		assert.Equal(t, "msg", string(data))

		typ, data, err = ReadUnpackedResponse(r)
		require.NoError(t, err, "a frame of size 4 has a type and no data")
		assert.Equal(t, FrameTypeResponse, typ)
		assert.Empty(t, data)

		_, err = ReadResponse(r)
		assert.Same(t, io.EOF, err, "EOF between frames is a clean end")
		typ, _, err = ReadUnpackedResponse(r)
		assert.Same(t, io.EOF, err)
		assert.Equal(t, int32(-1), typ)
	})

	t.Run("bad_sizes", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			raw  []byte
			want FrameError
		}{
			{"over_limit", binary.BigEndian.AppendUint32(nil, DefaultMaxFrameSize+1),
				FrameError{Size: DefaultMaxFrameSize + 1, Reason: "frame size 33554433 is over the 33554432-byte limit (Config.MaxFrameSize); is the address an nsqd TCP port?"}},
			{"huge", []byte{0xff, 0xff, 0xff, 0xff},
				FrameError{Size: 1<<32 - 1, Reason: "frame size 4294967295 is over the 33554432-byte limit (Config.MaxFrameSize); is the address an nsqd TCP port?"}},
			{"http", []byte("HTTP/1.1 400 Bad Request\r\n"),
				FrameError{Reason: `the server answered "HTTP...": is this nsqd's HTTP port instead of its TCP port?`}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := ReadResponse(bytes.NewReader(tc.raw))
				var ferr *FrameError
				require.ErrorAs(t, err, &ferr)
				assert.Equal(t, tc.want, *ferr)
				assert.Equal(t, "nsq: bad frame from server: "+tc.want.Reason, err.Error())

				typ, _, err := ReadUnpackedResponse(bytes.NewReader(tc.raw))
				require.ErrorAs(t, err, &ferr)
				assert.Equal(t, int32(-1), typ)

				fr := frameReader{r: bytes.NewReader(tc.raw), limit: DefaultMaxFrameSize}
				typ, data, err := fr.next()
				require.ErrorAs(t, err, &ferr)
				assert.Equal(t, tc.want, *ferr)
				assert.Equal(t, int32(-1), typ)
				assert.Nil(t, data)
			})
		}
	})

	// Frames of size 0 to 3 have no room for a type: ReadResponse returns
	// them as they are and ReadUnpackedResponse says they are too small,
	// as go-nsq's do; a Conn refuses them.
	t.Run("tiny_frames", func(t *testing.T) {
		for size := range 4 {
			raw := append(binary.BigEndian.AppendUint32(nil, uint32(size)), "abc"[:size]...)
			resp, err := ReadResponse(bytes.NewReader(raw))
			require.NoError(t, err, "size %d", size)
			assert.Equal(t, []byte("abc"[:size]), resp)

			typ, data, err := ReadUnpackedResponse(bytes.NewReader(raw))
			require.EqualError(t, err, "length of response is too small")
			assert.Equal(t, int32(-1), typ)
			assert.Nil(t, data)

			fr := frameReader{r: bytes.NewReader(raw), limit: DefaultMaxFrameSize}
			_, _, err = fr.next()
			var ferr *FrameError
			require.ErrorAs(t, err, &ferr)
			assert.Equal(t, FrameError{Size: int64(size), Reason: fmt.Sprintf("frame size %d is smaller than its 4-byte type", size)}, *ferr)
		}
	})

	t.Run("limit_is_inclusive", func(t *testing.T) {
		f := testFrame(FrameTypeResponse, strings.Repeat("x", 1020)) // size 1024
		fr := frameReader{r: bytes.NewReader(f), limit: 1024}
		_, data, err := fr.next()
		require.NoError(t, err)
		assert.Len(t, data, 1020)

		fr = frameReader{r: bytes.NewReader(f), limit: 1023}
		_, _, err = fr.next()
		var ferr *FrameError
		require.ErrorAs(t, err, &ferr)
		assert.Equal(t, int64(1024), ferr.Size)
	})

	t.Run("lying_size_allocates_what_arrives", func(t *testing.T) {
		// The largest size allowed, and 10 bytes: no 32 MiB buffer.
		raw := append(binary.BigEndian.AppendUint32(nil, DefaultMaxFrameSize), "0123456789"...)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := ReadResponse(bytes.NewReader(raw))
		fr := frameReader{r: bytes.NewReader(raw), limit: DefaultMaxFrameSize}
		_, _, frErr := fr.next()
		runtime.ReadMemStats(&after)
		assert.Same(t, io.ErrUnexpectedEOF, err)
		assert.Same(t, io.ErrUnexpectedEOF, frErr)
		assert.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(1<<20))
	})

	t.Run("unpack_too_small", func(t *testing.T) {
		for _, resp := range [][]byte{nil, {}, {0, 0, 0}} {
			typ, data, err := UnpackResponse(resp)
			require.EqualError(t, err, "length of response is too small")
			assert.Equal(t, int32(-1), typ)
			assert.Nil(t, data)
		}
		typ, data, err := UnpackResponse([]byte{0, 0, 0, 1})
		require.NoError(t, err)
		assert.Equal(t, FrameTypeError, typ)
		assert.Empty(t, data)
	})
}

// TestFrameReaderTruncated cuts frames at every byte: the stream ending
// inside a frame is io.ErrUnexpectedEOF, never a clean io.EOF.
func TestFrameReaderTruncated(t *testing.T) {
	small := testFrame(FrameTypeResponse, "_heartbeat_")
	// A frame read in chunks (data over 64 KiB): cut at the chunk
	// boundaries too.
	large := testFrame(FrameTypeResponse, strings.Repeat("y", 200<<10))
	cuts := func(f []byte) []int {
		if len(f) < 100 {
			var all []int
			for i := 1; i < len(f); i++ {
				all = append(all, i)
			}
			return all
		}
		return []int{1, 4, 5, 8, 9, 8 + 64<<10 - 1, 8 + 64<<10, 8 + 64<<10 + 1, 8 + 128<<10, 8 + 192<<10, len(f) - 1}
	}
	for _, f := range [][]byte{small, large} {
		for _, cut := range cuts(f) {
			for _, oneByte := range []bool{false, true} {
				var r io.Reader = bytes.NewReader(f[:cut])
				if oneByte {
					r = iotest.OneByteReader(r)
				}
				fr := frameReader{r: r, limit: DefaultMaxFrameSize}
				typ, data, err := fr.next()
				require.Same(t, io.ErrUnexpectedEOF, err, "frame of %d bytes cut after %d (one byte at a time: %v)", len(f), cut, oneByte)
				assert.Equal(t, int32(-1), typ)
				assert.Nil(t, data)

				// ReadResponse answers as go-nsq's does: nil data, io.EOF
				// after the size and nothing else, else
				// io.ErrUnexpectedEOF (also at readBody's chunk boundaries).
				resp, err := ReadResponse(r2(f[:cut], oneByte))
				assert.Nil(t, resp, "ReadResponse: frame of %d bytes cut after %d", len(f), cut)
				if cut == 4 {
					assert.Same(t, io.EOF, err, "ReadResponse: frame of %d bytes cut after the size", len(f))
				} else {
					assert.Same(t, io.ErrUnexpectedEOF, err, "ReadResponse: frame of %d bytes cut after %d", len(f), cut)
				}
			}
		}
		fr := frameReader{r: bytes.NewReader(f), limit: DefaultMaxFrameSize}
		_, data, err := fr.next()
		require.NoError(t, err)
		assert.Equal(t, f[8:], data)
		_, _, err = fr.next()
		assert.Same(t, io.EOF, err, "EOF between frames is a clean end")
	}
}

// r2 returns a reader of b, one byte at a time when oneByte is set.
func r2(b []byte, oneByte bool) io.Reader {
	if oneByte {
		return iotest.OneByteReader(bytes.NewReader(b))
	}
	return bytes.NewReader(b)
}

// FuzzFrameReader checks the frame decoder two ways: (a) a frame encoded
// from (typ, data) reads back as exactly (typ, data); (b) arbitrary bytes
// never panic, never yield data over the limit, and end with io.EOF only at
// a frame boundary, io.ErrUnexpectedEOF inside a frame, or a *FrameError.
//
//	go test -run Fuzz -fuzz FuzzFrameReader -fuzztime 30s .
func FuzzFrameReader(f *testing.F) {
	two := append(testFrame(FrameTypeResponse, "_heartbeat_"), testFrame(FrameTypeError, "E_INVALID x")...)
	for _, seed := range []struct {
		raw  []byte
		typ  int32
		data []byte
	}{
		{testFrame(FrameTypeResponse, "OK"), FrameTypeResponse, []byte("OK")},
		{two, FrameTypeError, []byte("E_BAD_TOPIC PUB topic name \"a b\" is not valid")},
		{testFrame(FrameTypeMessage, "0123456789abcdefghijklmnopqrstuvwxyz"), FrameTypeMessage, make([]byte, 30)},
		{[]byte("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\r\n"), 7, []byte("{}")},
		{[]byte{0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0, 'O', 'K'}, -1, nil},
		{[]byte{0xff, 0xff, 0xff, 0xff}, 1<<31 - 1, []byte{}},
		{[]byte{0, 0, 0, 0}, 0, []byte("\x00")},
		{[]byte{0, 0, 0, 3, 0, 0, 0}, 3, nil},
		{[]byte{0, 0, 0, 4, 0, 0, 0, 0}, 0, nil},
		{testFrame(FrameTypeResponse, "OK")[:6], 0, []byte("OK")},
		{binary.BigEndian.AppendUint32(nil, 1024), 0, bytes.Repeat([]byte("z"), 1020)},
		{binary.BigEndian.AppendUint32(nil, 1025), 0, bytes.Repeat([]byte("z"), 1021)},
		{nil, 0, nil},
	} {
		f.Add(seed.raw, seed.typ, seed.data)
	}
	f.Fuzz(func(t *testing.T, raw []byte, typ int32, data []byte) {
		// (a) Round trip.
		enc := binary.BigEndian.AppendUint32(nil, uint32(4+len(data)))
		enc = binary.BigEndian.AppendUint32(enc, uint32(typ))
		enc = append(enc, data...)
		exact := int64(4 + len(data))
		for _, oneByte := range []bool{false, true} {
			var r io.Reader = bytes.NewReader(enc)
			if oneByte {
				r = iotest.OneByteReader(r)
			}
			fr := frameReader{r: r, limit: exact}
			gotTyp, gotData, err := fr.next()
			require.NoError(t, err)
			require.Equal(t, typ, gotTyp)
			require.True(t, bytes.Equal(data, gotData), "data: got %q, want %q", gotData, data)
			_, _, err = fr.next()
			require.Same(t, io.EOF, err)
		}
		fr := frameReader{r: bytes.NewReader(enc), limit: exact - 1}
		_, _, err := fr.next()
		var ferr *FrameError
		require.ErrorAs(t, err, &ferr, "a frame one byte over the limit")
		require.Equal(t, exact, ferr.Size)
		gotTyp, gotData, err := ReadUnpackedResponse(bytes.NewReader(enc))
		require.NoError(t, err)
		require.Equal(t, typ, gotTyp)
		require.True(t, bytes.Equal(data, gotData))

		// (b) Arbitrary bytes, through the frame reader (with a small
		// limit, and with ReadResponse's, one byte at a time) and
		// ReadResponse: the same frames, the same kind of end.
		const limit = 1024
		type frameOut struct {
			typ  int32
			data string
		}
		decode := func(limit int64, oneByte bool) ([]frameOut, error) {
			br := bytes.NewReader(raw)
			var r io.Reader = br
			if oneByte {
				r = iotest.OneByteReader(br)
			}
			fr := frameReader{r: r, limit: limit}
			var out []frameOut
			for {
				before := br.Len()
				typ, data, err := fr.next()
				if err != nil {
					switch {
					case err == io.EOF:
						require.Zero(t, before, "io.EOF with %d bytes left: only a clean end between frames is io.EOF", before)
					case err == io.ErrUnexpectedEOF:
						require.NotZero(t, before)
						require.Zero(t, br.Len(), "io.ErrUnexpectedEOF before the end of the input")
					default:
						require.ErrorAs(t, err, &ferr, "unexpected error %v", err)
					}
					require.Equal(t, int32(-1), typ)
					require.Nil(t, data)
					return out, err
				}
				require.LessOrEqual(t, int64(len(data)), limit-4, "data over the limit")
				require.Equal(t, 8+len(data), before-br.Len(), "bytes consumed by one frame")
				out = append(out, frameOut{typ, string(data)})
			}
		}
		small, smallErr := decode(limit, false)
		full, fullErr := decode(DefaultMaxFrameSize, false)
		full1, fullErr1 := decode(DefaultMaxFrameSize, true)
		require.Equal(t, full, full1, "one byte at a time")
		require.Equal(t, fullErr, fullErr1)
		require.True(t, len(small) <= len(full) && (len(small) == 0 || assert.ObjectsAreEqual(small, full[:len(small)])),
			"a smaller limit reads a prefix of the same frames")
		if len(small) < len(full) {
			require.ErrorAs(t, smallErr, &ferr, "the small limit stopped early")
		} else {
			require.Equal(t, fullErr == io.EOF, smallErr == io.EOF)
		}

		r := bytes.NewReader(raw)
		var resps []frameOut
		for {
			resp, err := ReadResponse(r)
			if err != nil {
				if errors.As(fullErr, &ferr) && strings.Contains(ferr.Reason, "smaller than its 4-byte type") {
					// A tiny frame cut short: go-nsq's io errors.
					require.True(t, err == io.EOF || err == io.ErrUnexpectedEOF, "ReadResponse: %v", err)
				} else if errors.As(fullErr, &ferr) {
					require.ErrorAs(t, err, &ferr, "ReadResponse and the frame reader fail alike")
				} else {
					require.True(t, err == io.EOF || err == io.ErrUnexpectedEOF, "ReadResponse: %v", err)
				}
				break
			}
			require.LessOrEqual(t, len(resp), DefaultMaxFrameSize)
			typ, data, err := UnpackResponse(resp)
			if len(resp) < 4 {
				// A frame too small for its type: ReadResponse returns it,
				// as go-nsq's does, where the frame reader stops.
				require.Error(t, err)
				require.ErrorAs(t, fullErr, &ferr)
				require.Equal(t, int64(len(resp)), ferr.Size)
				break
			}
			require.NoError(t, err)
			resps = append(resps, frameOut{typ, string(data)})
		}
		require.Equal(t, full, resps, "ReadResponse reads the same frames")
	})
}

// The producer's encoders allocate nothing per publish.
func TestDirectEncodersAllocateNothing(t *testing.T) {
	w := newWireBuf(io.Discard, 64<<10)
	body := make([]byte, 100)
	big := make([]byte, 4*gatherMin)
	allocs := testing.AllocsPerRun(100, func() {
		w.gather = false
		writePUB(w, "topic", body)
		writeDPUB(w, "topic", 1500*time.Millisecond, body)
		writeMPUBHeader(w, "topic", 108, 1)
		writeMPUBMessage(w, body)
		writeMPUBEncoded(w, "topic", body)
		w.gather = true
		writePUB(w, "topic", big)
		writeMPUBEncoded(w, "topic", big)
		w.flush()
	})
	assert.Zero(t, allocs)
}
