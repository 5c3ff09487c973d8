package fakensqd

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// client is the raw client socket the tests drive the fake with.
type client struct {
	t  *testing.T
	nc net.Conn
	r  *bufio.Reader
}

func dial(t *testing.T, s *Server) *client {
	t.Helper()
	nc, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { nc.Close() })
	return &client{t: t, nc: nc, r: bufio.NewReader(nc)}
}

func (cl *client) send(b ...[]byte) {
	cl.t.Helper()
	if _, err := cl.nc.Write(slices.Concat(b...)); err != nil {
		cl.t.Fatalf("client write: %v", err)
	}
}

// readFrame reads one frame, failing the test on error.
func (cl *client) readFrame() (int32, string) {
	cl.t.Helper()
	typ, data, err := cl.tryReadFrame(5 * time.Second)
	if err != nil {
		cl.t.Fatalf("client read frame: %v", err)
	}
	return typ, data
}

func (cl *client) tryReadFrame(d time.Duration) (int32, string, error) {
	cl.nc.SetReadDeadline(time.Now().Add(d))
	var hdr [8]byte
	if _, err := io.ReadFull(cl.r, hdr[:]); err != nil {
		return 0, "", err
	}
	size := binary.BigEndian.Uint32(hdr[:4])
	data := make([]byte, size-4)
	if _, err := io.ReadFull(cl.r, data); err != nil {
		return 0, "", err
	}
	return int32(binary.BigEndian.Uint32(hdr[4:])), string(data), nil
}

// readExactly reads n raw bytes.
func (cl *client) readExactly(n int) []byte {
	cl.t.Helper()
	cl.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, n)
	if _, err := io.ReadFull(cl.r, b); err != nil {
		cl.t.Fatalf("client read %d bytes: %v", n, err)
	}
	return b
}

// cmd encodes a command line with an optional body (nil: no body).
func cmd(line string, body []byte) []byte {
	b := []byte(line + "\n")
	if body != nil {
		b = binary.BigEndian.AppendUint32(b, uint32(len(body)))
		b = append(b, body...)
	}
	return b
}

func mpubBody(msgs ...string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(msgs)))
	for _, m := range msgs {
		b = binary.BigEndian.AppendUint32(b, uint32(len(m)))
		b = append(b, m...)
	}
	return b
}

func identify(fields map[string]any) []byte {
	js, err := json.Marshal(fields)
	if err != nil {
		panic(err)
	}
	return cmd("IDENTIFY", js)
}

func TestHandshakeRoundTrip(t *testing.T) {
	s := New(t)
	cl := dial(t, s)
	cl.send([]byte(Magic), identify(map[string]any{"feature_negotiation": true, "client_id": "c1"}))

	c := s.Accept()
	got := c.Handshake(map[string]any{"max_rdy_count": 100, "auth_required": true, "extra": "x", "sample_rate": nil})
	if got.Name != "IDENTIFY" || !strings.Contains(string(got.Body), `"client_id":"c1"`) {
		t.Errorf("Handshake returned %s", got)
	}

	typ, data := cl.readFrame()
	if typ != FrameTypeResponse {
		t.Fatalf("frame type %d, want %d", typ, FrameTypeResponse)
	}
	var resp map[string]any
	if err := json.Unmarshal([]byte(data), &resp); err != nil {
		t.Fatalf("response %q: %v", data, err)
	}
	want := map[string]any{
		"max_rdy_count": 100.0, "version": "1.3.0", "max_msg_timeout": 900000.0,
		"msg_timeout": 60000.0, "tls_v1": false, "deflate": false, "deflate_level": 6.0,
		"max_deflate_level": 6.0, "snappy": false, "auth_required": true,
		"output_buffer_size": 16384.0, "output_buffer_timeout": 250.0, "extra": "x",
	}
	if !reflect.DeepEqual(resp, want) {
		t.Errorf("IDENTIFY response\n got %v\nwant %v", resp, want)
	}
}

func TestHandshakeWithoutFeatureNegotiationAnswersOK(t *testing.T) {
	s := New(t)
	cl := dial(t, s)
	cl.send([]byte(Magic), identify(map[string]any{"client_id": "c1"}))
	s.Accept().Handshake(nil)
	if typ, data := cl.readFrame(); typ != FrameTypeResponse || data != "OK" {
		t.Errorf("got frame %d %q, want response OK", typ, data)
	}
}

func TestReadCommand(t *testing.T) {
	tests := []struct {
		name string
		sent []byte
		want Command
	}{{
		name: "PUB",
		sent: cmd("PUB topic", []byte("hello")),
		want: Command{Name: "PUB", Params: []string{"topic"}, Body: []byte("hello")},
	}, {
		name: "MPUB",
		sent: cmd("MPUB topic", mpubBody("a", "bb", "")),
		want: Command{Name: "MPUB", Params: []string{"topic"}, Body: mpubBody("a", "bb", ""),
			Messages: [][]byte{[]byte("a"), []byte("bb"), {}}},
	}, {
		name: "DPUB",
		sent: cmd("DPUB topic 1500", []byte("later")),
		want: Command{Name: "DPUB", Params: []string{"topic", "1500"}, Body: []byte("later")},
	}, {
		name: "AUTH",
		sent: cmd("AUTH", []byte("secret")),
		want: Command{Name: "AUTH", Body: []byte("secret")},
	}, {
		name: "NOP",
		sent: cmd("NOP", nil),
		want: Command{Name: "NOP"},
	}, {
		name: "CRLF and double space, split like nsqd",
		sent: []byte("RDY  1\r\n"),
		want: Command{Name: "RDY", Params: []string{"", "1"}},
	}, {
		name: "empty PUB body",
		sent: cmd("PUB t", []byte{}),
		want: Command{Name: "PUB", Params: []string{"t"}, Body: []byte{}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(t)
			cl := dial(t, s)
			// One byte at a time, to exercise reassembly.
			go func() {
				for _, b := range tt.sent {
					cl.nc.Write([]byte{b})
				}
			}()
			got := s.Accept().ReadCommand()
			tt.want.Raw = tt.sent
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %#v\nwant %#v", got, tt.want)
			}
		})
	}
}

func TestCommandString(t *testing.T) {
	for _, tt := range []struct {
		c    Command
		want string
	}{
		{Command{Name: "NOP"}, "NOP"},
		{Command{Name: "PUB", Params: []string{"t"}, Body: []byte("hi")}, `PUB t [2 bytes "hi"]`},
		{Command{Name: "MPUB", Params: []string{"t"}, Body: mpubBody("a", "b"), Messages: [][]byte{{'a'}, {'b'}}}, "MPUB t [2 messages, 14 bytes]"},
	} {
		if got := tt.c.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
}

func TestNOPThenPUB(t *testing.T) {
	s := New(t)
	cl := dial(t, s)
	cl.send([]byte(Magic), cmd("NOP", nil), cmd("PUB t", []byte("m")))
	c := s.Accept()
	c.ReadMagic()
	c.Expect("NOP")
	if pub := c.Expect("PUB"); string(pub.Body) != "m" {
		t.Errorf("PUB body %q", pub.Body)
	}
}

func TestServePublishesSkipsNOPs(t *testing.T) {
	s := New(t)
	cl := dial(t, s)
	cl.send(cmd("NOP", nil), cmd("PUB t", []byte("1")), cmd("NOP", nil),
		cmd("MPUB t", mpubBody("2", "3")), cmd("DPUB t 10", []byte("4")))
	pubs := s.Accept().ServePublishes(3)
	var names []string
	for _, p := range pubs {
		names = append(names, p.Name)
	}
	if want := []string{"PUB", "MPUB", "DPUB"}; !slices.Equal(names, want) {
		t.Errorf("served %v, want %v", names, want)
	}
	for i := range 3 {
		if typ, data := cl.readFrame(); typ != FrameTypeResponse || data != "OK" {
			t.Errorf("answer %d: frame %d %q, want OK", i, typ, data)
		}
	}
	if _, _, err := cl.tryReadFrame(50 * time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("after three OKs: %v, want nothing (no answer to NOP)", err)
	}
}

func TestFrameBytesExact(t *testing.T) {
	tests := []struct {
		name  string
		write func(c *Conn)
		want  string
	}{
		{"OK", (*Conn).OK, "\x00\x00\x00\x06\x00\x00\x00\x00OK"},
		{"Heartbeat", (*Conn).Heartbeat, "\x00\x00\x00\x0f\x00\x00\x00\x00_heartbeat_"},
		{"Error", func(c *Conn) { c.Error("E_BAD_TOPIC PUB topic name \"a b\" is not valid") },
			"\x00\x00\x00\x31\x00\x00\x00\x01E_BAD_TOPIC PUB topic name \"a b\" is not valid"},
		{"Respond", func(c *Conn) { c.Respond(`{"a":1}`) }, "\x00\x00\x00\x0b\x00\x00\x00\x00{\"a\":1}"},
		{"Frame message", func(c *Conn) { c.Frame(FrameTypeMessage, []byte("xyz")) }, "\x00\x00\x00\x07\x00\x00\x00\x02xyz"},
		{"Frame empty unknown type", func(c *Conn) { c.Frame(7, nil) }, "\x00\x00\x00\x04\x00\x00\x00\x07"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(t)
			cl := dial(t, s)
			tt.write(s.Accept())
			if got := cl.readExactly(len(tt.want)); string(got) != tt.want {
				t.Errorf("wrote %q, want %q", got, tt.want)
			}
		})
	}
}

func TestWriteRawHalfFrame(t *testing.T) {
	s := New(t)
	cl := dial(t, s)
	c := s.Accept()
	frame := AppendFrame(nil, FrameTypeResponse, []byte("OK"))
	c.WriteRaw(frame[:5])
	if got := cl.readExactly(5); !bytes.Equal(got, frame[:5]) {
		t.Fatalf("got %q, want %q", got, frame[:5])
	}
	if _, _, err := cl.tryReadFrame(50 * time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("after half a frame: %v, want a read timeout", err)
	}
	c.WriteRaw(frame[5:])
	if got := cl.readExactly(len(frame) - 5); !bytes.Equal(got, frame[5:]) {
		t.Errorf("got %q, want %q", got, frame[5:])
	}
}

func TestResetGivesClientConnectionReset(t *testing.T) {
	s := New(t)
	cl := dial(t, s)
	c := s.Accept()
	c.Reset()
	_, _, err := cl.tryReadFrame(5 * time.Second)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("client read after Reset: %v, want ECONNRESET", err)
	}
}

func TestCloseGivesClientEOF(t *testing.T) {
	s := New(t)
	cl := dial(t, s)
	s.Accept().Close()
	if _, _, err := cl.tryReadFrame(5 * time.Second); err != io.EOF {
		t.Errorf("client read after Close: %v, want EOF", err)
	}
}

func TestExpectClosed(t *testing.T) {
	s := New(t)
	cl := dial(t, s)
	c := s.Accept()
	go func() {
		time.Sleep(20 * time.Millisecond)
		cl.nc.Close()
	}()
	c.ExpectClosed(5 * time.Second)
}

func TestTryReadCommand(t *testing.T) {
	s := New(t)
	cl := dial(t, s)
	c := s.Accept()

	if _, err := c.TryReadCommand(20 * time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("nothing sent: %v, want a deadline error", err)
	}
	// Half a PUB, then a timeout: the half stays buffered.
	pub := cmd("PUB t", []byte("body"))
	cl.send(pub[:8])
	_, err := c.TryReadCommand(50 * time.Millisecond)
	if !errors.Is(err, os.ErrDeadlineExceeded) || !strings.Contains(err.Error(), "got 8 bytes") {
		t.Fatalf("half a PUB: %v, want a deadline error naming the 8 bytes", err)
	}
	cl.send(pub[8:])
	if got, err := c.TryReadCommand(5 * time.Second); err != nil || !bytes.Equal(got.Raw, pub) {
		t.Fatalf("rest of the PUB: %s, %v; want the whole PUB", got, err)
	}

	cl.send(cmd("MPUB t", []byte{0, 0, 0, 9, 0, 0, 0, 1, 'x'}))
	if _, err := c.TryReadCommand(5 * time.Second); !errors.Is(err, ErrMalformed) {
		t.Errorf("MPUB with a bad count: %v, want ErrMalformed", err)
	}

	cl.nc.Close()
	s2 := New(t)
	cl2 := dial(t, s2)
	c2 := s2.Accept()
	cl2.nc.Close()
	if _, err := c2.TryReadCommand(5 * time.Second); !errors.Is(err, io.EOF) {
		t.Errorf("client closed: %v, want io.EOF", err)
	}
	c2.Close()
	if _, err := c2.TryReadCommand(5 * time.Second); !errors.Is(err, net.ErrClosed) {
		t.Errorf("fake closed: %v, want net.ErrClosed", err)
	}
}

func TestAcceptTimeout(t *testing.T) {
	s := New(t)
	if _, err := s.AcceptTimeout(20 * time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("no client: %v, want a deadline error", err)
	}
	s.Close()
	if _, err := s.AcceptTimeout(time.Second); !errors.Is(err, ErrServerClosed) {
		t.Errorf("closed server: %v, want ErrServerClosed", err)
	}
}

func TestGoScriptsTakeConnectionsInOrder(t *testing.T) {
	s := New(t)
	var got [3]Command
	for i := range 3 {
		s.Go(func(c *Conn) { got[i] = c.Expect("PUB") })
	}
	for i := range 3 {
		cl := dial(t, s)
		cl.send(cmd("PUB t", []byte{byte('0' + i)}))
		// Wait for the connection to be accepted before dialling the next,
		// so that arrival order is dial order.
		deadline := time.Now().Add(5 * time.Second)
		for s.acceptedCount() < i+1 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	s.Wait()
	for i, c := range got {
		if string(c.Body) != string(rune('0'+i)) {
			t.Errorf("script %d got %s, want body %q", i, c, string(rune('0'+i)))
		}
	}
}

func (s *Server) acceptedCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nextID
}

// recTB records failures instead of failing the real test, to test the
// fake's failure rule. Fatal and FailNow end the calling goroutine.
type recTB struct {
	testing.TB
	mu       sync.Mutex
	errs     []string
	fatal    bool
	cleanups []func()
}

func (r *recTB) Helper()           {}
func (r *recTB) Error(args ...any) { r.record(fmt.Sprint(args...), false) }
func (r *recTB) Errorf(f string, args ...any) {
	r.record(fmt.Sprintf(f, args...), false)
}
func (r *recTB) Fatal(args ...any) { r.record(fmt.Sprint(args...), true); runtime.Goexit() }
func (r *recTB) Fatalf(f string, args ...any) {
	r.record(fmt.Sprintf(f, args...), true)
	runtime.Goexit()
}
func (r *recTB) Cleanup(f func()) { r.mu.Lock(); r.cleanups = append(r.cleanups, f); r.mu.Unlock() }

func (r *recTB) record(msg string, fatal bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, msg)
	r.fatal = r.fatal || fatal
}

// runCleanups plays the end of the test.
func (r *recTB) runCleanups() {
	r.mu.Lock()
	fs := r.cleanups
	r.cleanups = nil
	r.mu.Unlock()
	for _, f := range slices.Backward(fs) {
		f()
	}
}

func (r *recTB) failures() (errs []string, fatal bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.errs), r.fatal
}

// wantFailure checks that exactly one failure was recorded, containing
// every one of parts.
func (r *recTB) wantFailure(t *testing.T, fatal bool, parts ...string) {
	t.Helper()
	errs, gotFatal := r.failures()
	if len(errs) != 1 {
		t.Fatalf("recorded %d failures %q, want 1", len(errs), errs)
	}
	for _, p := range parts {
		if !strings.Contains(errs[0], p) {
			t.Errorf("failure %q does not contain %q", errs[0], p)
		}
	}
	if gotFatal != fatal {
		t.Errorf("fatal = %v, want %v", gotFatal, fatal)
	}
}

func TestFailureOnTestGoroutineIsFatal(t *testing.T) {
	rec := &recTB{TB: t}
	defer rec.runCleanups()
	var reached atomic.Bool
	done := make(chan struct{})
	var addr string
	ready := make(chan struct{})
	// This goroutine plays the test goroutine: it calls New.
	go func() {
		defer close(done)
		s := New(rec)
		addr = s.Addr()
		close(ready)
		c := s.Accept()
		c.Expect("PUB")
		reached.Store(true)
	}()
	<-ready
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.Write(cmd("NOP", nil))
	<-done
	if reached.Load() {
		t.Error("the script went on after a fatal failure")
	}
	rec.wantFailure(t, true, `conn #1: Expect("PUB"): got NOP`)
}

func TestFailureInGoScriptEndsOnlyTheScript(t *testing.T) {
	rec := &recTB{TB: t}
	defer rec.runCleanups()
	s := New(rec)
	var reached atomic.Bool
	s.Go(func(c *Conn) {
		c.Expect("PUB")
		reached.Store(true)
	})
	cl := dial(t, s)
	cl.send(cmd("NOP", nil))
	// The failed conn is closed: the client is not left waiting.
	if _, _, err := cl.tryReadFrame(5 * time.Second); err != io.EOF {
		t.Errorf("client read after the script failed: %v, want EOF", err)
	}
	s.Wait()
	if reached.Load() {
		t.Error("the script went on after its failure")
	}
	rec.wantFailure(t, false, `conn #1: Expect("PUB"): got NOP`)
}

// A Conn from Accept fails fatally wherever it is used: the rule follows
// where the Conn came from, not the goroutine. The failed Conn is dead and
// its socket closed.
func TestFailureOfAcceptedConnIsFatalAndKillsConn(t *testing.T) {
	rec := &recTB{TB: t}
	defer rec.runCleanups()
	s := New(rec)
	cl := dial(t, s)
	cl.send(cmd("NOP", nil), cmd("PUB t", []byte("x")))
	var c *Conn
	var reached atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		c = s.Accept()
		c.Expect("PUB") // fails: NOP; t.Fatal ends this goroutine
		reached.Store(true)
	}()
	<-done
	if reached.Load() {
		t.Error("the goroutine went on after a fatal failure")
	}
	rec.wantFailure(t, true, `Expect("PUB"): got NOP`)
	if got := c.Expect("PUB"); got.Name != "" {
		t.Errorf("Expect on a dead Conn returned %s, want a zero Command", got)
	}
	if _, err := c.TryReadCommand(time.Second); err == nil {
		t.Error("TryReadCommand on a dead Conn returned no error")
	}
	if _, _, err := cl.tryReadFrame(5 * time.Second); err != io.EOF {
		t.Errorf("client read after the failure: %v, want EOF", err)
	}
}

// Accept fails fatally once the server is closed.
func TestAcceptAfterCloseIsFatal(t *testing.T) {
	rec := &recTB{TB: t}
	defer rec.runCleanups()
	s := New(rec)
	s.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Accept()
		t.Error("Accept returned after a fatal failure")
	}()
	<-done
	rec.wantFailure(t, true, "Accept: no client connected before the server was closed")
}

func TestCleanupReportsScriptWaitingForCommand(t *testing.T) {
	rec := &recTB{TB: t}
	s := New(rec)
	s.Go(func(c *Conn) { c.Expect("PUB") })
	dial(t, s)
	waitFor(t, func() bool { return s.acceptedCount() == 1 })
	rec.runCleanups()
	rec.wantFailure(t, false, `Expect("PUB")`, "the server was closed")
}

func TestCleanupReportsScriptWithoutConnection(t *testing.T) {
	rec := &recTB{TB: t}
	s := New(rec)
	s.Go(func(c *Conn) { t.Error("script ran without a connection") })
	rec.runCleanups()
	rec.wantFailure(t, false, "got no connection", "server was closed")
}

func TestCleanupReportsStuckScript(t *testing.T) {
	rec := &recTB{TB: t}
	s := New(rec)
	s.closeGrace = 50 * time.Millisecond
	release := make(chan struct{})
	defer close(release)
	blocked := make(chan struct{})
	s.Go(func(c *Conn) {
		c.ReadMagic()
		close(blocked)
		<-release // not a Conn call: closing the socket cannot end it
	})
	cl := dial(t, s)
	cl.send([]byte(Magic))
	<-blocked
	rec.runCleanups()
	rec.wantFailure(t, false, "still blocked", "not in a Conn call")
}

func TestExpectClosedFailsWhenCommandArrives(t *testing.T) {
	rec := &recTB{TB: t}
	defer rec.runCleanups()
	s := New(rec)
	s.Go(func(c *Conn) { c.ExpectClosed(5 * time.Second) })
	cl := dial(t, s)
	cl.send(cmd("NOP", nil))
	s.Wait()
	rec.wantFailure(t, false, "ExpectClosed", "the client sent NOP instead of closing")
}

func TestExpectClosedFailsWhenClientStaysOpen(t *testing.T) {
	rec := &recTB{TB: t}
	defer rec.runCleanups()
	s := New(rec)
	s.Go(func(c *Conn) { c.ExpectClosed(30 * time.Millisecond) })
	dial(t, s)
	s.Wait()
	rec.wantFailure(t, false, "did not close the connection within 30ms")
}

func TestReadMagicFailsOnWrongMagic(t *testing.T) {
	rec := &recTB{TB: t}
	defer rec.runCleanups()
	s := New(rec)
	s.Go(func(c *Conn) { c.ReadMagic() })
	cl := dial(t, s)
	cl.send([]byte("GET / HTTP/1.1\r\n"))
	s.Wait()
	rec.wantFailure(t, false, `ReadMagic: got "GET ", want "  V2"`)
}

func TestReadCommandTimeoutNamesPartialBytes(t *testing.T) {
	rec := &recTB{TB: t}
	defer rec.runCleanups()
	s := New(rec)
	s.Go(func(c *Conn) {
		c.SetReadTimeout(30 * time.Millisecond)
		c.ReadCommand()
	})
	cl := dial(t, s)
	cl.send([]byte("PUB t\n\x00\x00"))
	s.Wait()
	rec.wantFailure(t, false, "ReadCommand: no complete command within 30ms", "got 8 bytes")
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestAppendFrame(t *testing.T) {
	got := AppendFrame([]byte("x"), FrameTypeError, []byte("E_INVALID"))
	want := "x\x00\x00\x00\x0d\x00\x00\x00\x01E_INVALID"
	if string(got) != want {
		t.Errorf("AppendFrame = %q, want %q", got, want)
	}
}

// FuzzParseCommand checks that parseCommand never panics, that a command
// it returns is the exact prefix it consumed and parses back the same, and
// that a command encoded by the tests' client parses back to its parts.
func FuzzParseCommand(f *testing.F) {
	f.Add([]byte("PUB t\n\x00\x00\x00\x01x"), "PUB", "t", []byte("x"))
	f.Add(cmd("MPUB t", mpubBody("a", "bc")), "MPUB", "t", []byte("a"))
	f.Add([]byte("NOP\nPUB"), "NOP", "", []byte(nil))
	f.Add([]byte("\n"), "DPUB", "t 10", []byte("yy"))
	f.Add([]byte("MPUB t\n\x00\x00\x00\x04\xff\xff\xff\xff"), "IDENTIFY", "", []byte("{}"))
	f.Fuzz(func(t *testing.T, in []byte, name, params string, body []byte) {
		c, n, err := parseCommand(in)
		if err == nil && n > 0 {
			if !bytes.Equal(c.Raw, in[:n]) {
				t.Fatalf("Raw %q is not the consumed prefix %q", c.Raw, in[:n])
			}
			again, m, err := parseCommand(c.Raw)
			if err != nil || m != n || !reflect.DeepEqual(again, c) {
				t.Fatalf("reparse of %q: %v, %d, %v", c.Raw, again, m, err)
			}
		}

		if name == "" || strings.ContainsAny(name, " \n\r") || strings.ContainsAny(params, "\n\r") || strings.HasSuffix(params, "\r") {
			return
		}
		line := name
		if params != "" {
			line += " " + params
		}
		var enc []byte
		if hasBody(name) {
			if name == "MPUB" {
				body = mpubBody(string(body), "z")
			}
			enc = cmd(line, body)
		} else {
			enc = cmd(line, nil)
		}
		c, n, err = parseCommand(enc)
		if err != nil || n != len(enc) {
			t.Fatalf("parse %q: n=%d err=%v", enc, n, err)
		}
		if c.Name != name || strings.Join(c.Params, " ") != params || (hasBody(name) && !bytes.Equal(c.Body, body)) {
			t.Fatalf("parse %q = %#v", enc, c)
		}
		// A strict prefix is incomplete, never an error.
		for i := range len(enc) {
			if _, n, err := parseCommand(enc[:i]); n != 0 || err != nil {
				t.Fatalf("prefix %q: n=%d err=%v", enc[:i], n, err)
			}
		}
	})
}
