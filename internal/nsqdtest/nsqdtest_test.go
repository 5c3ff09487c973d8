package nsqdtest

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// rawConn is a minimal V2 protocol client for the tests.
type rawConn struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dialV2(t *testing.T, addr string) *rawConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("  V2")); err != nil {
		t.Fatal(err)
	}
	return &rawConn{t: t, conn: conn, r: bufio.NewReader(conn)}
}

// cmd sends a command line, optionally followed by a size-prefixed body.
func (c *rawConn) cmd(line string, body []byte) error {
	buf := []byte(line + "\n")
	if body != nil {
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(body)))
		buf = append(buf, body...)
	}
	_, err := c.conn.Write(buf)
	return err
}

func (c *rawConn) read() (int32, []byte, error) {
	return readFrame(c.r)
}

// expect reads one frame and checks it is a response with the given data.
func (c *rawConn) expect(want string) {
	c.t.Helper()
	typ, data, err := c.read()
	if err != nil {
		c.t.Fatalf("reading response: %v", err)
	}
	if typ != frameTypeResponse || string(data) != want {
		c.t.Fatalf("got frame type %d %q, want response %q", typ, data, want)
	}
}

func (c *rawConn) pub(topic, body string) {
	c.t.Helper()
	if err := c.cmd("PUB "+topic, []byte(body)); err != nil {
		c.t.Fatal(err)
	}
	c.expect("OK")
}

func (c *rawConn) mpub(topic string, bodies []string) {
	c.t.Helper()
	var payload []byte
	payload = binary.BigEndian.AppendUint32(payload, uint32(len(bodies)))
	for _, b := range bodies {
		payload = binary.BigEndian.AppendUint32(payload, uint32(len(b)))
		payload = append(payload, b...)
	}
	if err := c.cmd("MPUB "+topic, payload); err != nil {
		c.t.Fatal(err)
	}
	c.expect("OK")
}

func TestBinary(t *testing.T) {
	start := time.Now()
	bin, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("nsqd binary %s (Binary took %v)", bin, time.Since(start))
	if _, err := os.Stat(bin); err != nil {
		t.Fatal(err)
	}
}

func TestPublishStatsConsume(t *testing.T) {
	t.Parallel()
	n := Start(t)
	if !strings.HasPrefix(n.TCPAddr(), "127.0.0.1:") || strings.HasSuffix(n.TCPAddr(), ":0") {
		t.Fatalf("TCPAddr = %q", n.TCPAddr())
	}
	if !strings.HasPrefix(n.HTTPAddr(), "127.0.0.1:") || n.HTTPAddr() == n.TCPAddr() {
		t.Fatalf("HTTPAddr = %q", n.HTTPAddr())
	}
	if n.HTTPSAddr() != "" {
		t.Fatalf("HTTPSAddr = %q without TLS", n.HTTPSAddr())
	}

	st, err := n.Stats("t")
	if err != nil || st != (TopicStats{}) {
		t.Fatalf("Stats of missing topic = %+v, %v", st, err)
	}

	before := time.Now()
	c := dialV2(t, n.TCPAddr())
	for i := range 3 {
		c.pub("t", fmt.Sprintf("msg-%d", i))
	}

	st, err = n.Stats("t")
	if err != nil {
		t.Fatal(err)
	}
	// No channel yet: the topic keeps all messages.
	if want := (TopicStats{Depth: 3, MessageCount: 3, MessageBytes: 15}); st != want {
		t.Fatalf("Stats = %+v, want %+v", st, want)
	}
	if st, _ := n.Stats("other"); st != (TopicStats{}) {
		t.Fatalf("Stats of missing topic = %+v", st)
	}

	msgs := n.Consume(t, "t", 3, 10*time.Second)
	for i, m := range msgs {
		if want := fmt.Sprintf("msg-%d", i); string(m.Body) != want {
			t.Errorf("message %d body = %q, want %q", i, m.Body, want)
		}
		if m.Attempts != 1 {
			t.Errorf("message %d attempts = %d", i, m.Attempts)
		}
		if m.Timestamp.Before(before.Add(-time.Second)) || m.Timestamp.After(time.Now()) {
			t.Errorf("message %d timestamp = %v", i, m.Timestamp)
		}
		if m.ID == ([16]byte{}) {
			t.Errorf("message %d has a zero ID", i)
		}
	}
	st, err = n.Stats("t")
	if err != nil || st.Depth != 0 || st.MessageCount != 3 {
		t.Fatalf("Stats after Consume = %+v, %v", st, err)
	}

	// The channel is durable: later messages wait for the next Consume.
	c.pub("t", "later")
	if msgs := n.Consume(t, "t", 1, 10*time.Second); string(msgs[0].Body) != "later" {
		t.Fatalf("got %q", msgs[0].Body)
	}
	if !strings.Contains(n.Log(), "TCP: listening on "+n.TCPAddr()) {
		t.Errorf("log does not mention the TCP address:\n%s", n.Log())
	}
}

func TestConsumeMoreThanMaxRdy(t *testing.T) {
	t.Parallel()
	n := Start(t)
	c := dialV2(t, n.TCPAddr())
	const total = 6000
	bodies := make([]string, 0, 1000)
	for i := range total {
		bodies = append(bodies, fmt.Sprint(i))
		if len(bodies) == cap(bodies) {
			c.mpub("big", bodies)
			bodies = bodies[:0]
		}
	}
	msgs := n.Consume(t, "big", total-1, 20*time.Second)
	for i, m := range msgs {
		if string(m.Body) != fmt.Sprint(i) {
			t.Fatalf("message %d = %q", i, m.Body)
		}
	}
	// Exactly total-1 were taken; the last one is still in the channel.
	msgs = n.Consume(t, "big", 1, 10*time.Second)
	if string(msgs[0].Body) != fmt.Sprint(total-1) || msgs[0].Attempts != 1 {
		t.Fatalf("last message = %q (attempts %d)", msgs[0].Body, msgs[0].Attempts)
	}
}

func TestKillRestart(t *testing.T) {
	t.Parallel()
	n := Start(t)
	tcp, http := n.TCPAddr(), n.HTTPAddr()
	c := dialV2(t, tcp)
	c.pub("t", "before")

	n.Kill()
	if _, _, err := c.read(); err == nil {
		t.Fatal("connection still works after Kill")
	}
	if _, err := n.Stats("t"); err == nil {
		t.Fatal("Stats works after Kill")
	}

	n.Restart()
	if n.TCPAddr() != tcp || n.HTTPAddr() != http {
		t.Fatalf("addresses changed: %s %s -> %s %s", tcp, http, n.TCPAddr(), n.HTTPAddr())
	}
	c = dialV2(t, n.TCPAddr())
	c.pub("t", "after")
	if st, err := n.Stats("t"); err != nil || st.MessageCount != 1 {
		t.Fatalf("Stats after restart = %+v, %v", st, err)
	}
	if got := strings.Count(n.Log(), "nsqdtest: starting "); got != 2 {
		t.Fatalf("log shows %d starts", got)
	}
}

func TestStopRestartKeepsMessages(t *testing.T) {
	t.Parallel()
	n := Start(t)
	c := dialV2(t, n.TCPAddr())
	c.mpub("t", []string{"a", "b"})
	n.Stop()
	n.Stop() // no-op

	n.Restart()
	// A graceful stop flushes the in-memory messages to the data path.
	if st, err := n.Stats("t"); err != nil || st.Depth != 2 {
		t.Fatalf("Stats after restart = %+v, %v", st, err)
	}
	msgs := n.Consume(t, "t", 2, 10*time.Second)
	if string(msgs[0].Body) != "a" || string(msgs[1].Body) != "b" {
		t.Fatalf("got %q %q", msgs[0].Body, msgs[1].Body)
	}
	n.Restart() // while running: stops first
	if st, err := n.Stats("t"); err != nil || st.Depth != 0 {
		t.Fatalf("Stats after second restart = %+v, %v", st, err)
	}
	if msgs := n.Consume(t, "t", 0, time.Second); msgs != nil {
		t.Fatalf("Consume of 0 messages = %v", msgs)
	}
}

func TestTLS(t *testing.T) {
	t.Parallel()
	caFile, certFile, keyFile := GenCerts(t)
	n := Start(t,
		"--tls-cert="+certFile,
		"--tls-key="+keyFile,
		"--tls-root-ca-file="+caFile,
		"--tls-required=true",
	)
	if n.HTTPSAddr() == "" || !strings.HasPrefix(n.HTTPSAddr(), "127.0.0.1:") {
		t.Fatalf("HTTPSAddr = %q", n.HTTPSAddr())
	}

	// The certificate verifies against the CA for 127.0.0.1 and localhost.
	ca, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		t.Fatal("bad CA PEM")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"127.0.0.1", "localhost"} {
		conn, err := tls.Dial("tcp", n.HTTPSAddr(), &tls.Config{
			RootCAs:      pool,
			ServerName:   name,
			Certificates: []tls.Certificate{cert},
		})
		if err != nil {
			t.Fatalf("TLS handshake with ServerName %s: %v", name, err)
		}
		conn.Close()
	}

	// TLS is required: a plaintext PUB is refused.
	c := dialV2(t, n.TCPAddr())
	if err := c.cmd("PUB t", []byte("x")); err != nil {
		t.Fatal(err)
	}
	typ, data, err := c.read()
	if err != nil || typ != frameTypeError || !strings.HasPrefix(string(data), "E_INVALID") {
		t.Fatalf("plaintext PUB: type %d %q %v", typ, data, err)
	}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	n := Start(t, "--auth-http-address", AuthServer(t, "s3cret"))

	identify := func(c *rawConn) {
		t.Helper()
		if err := c.cmd("IDENTIFY", []byte(`{"client_id":"nsqdtest"}`)); err != nil {
			t.Fatal(err)
		}
		c.expect("OK")
	}

	// Without AUTH, PUB is refused.
	c := dialV2(t, n.TCPAddr())
	identify(c)
	c.cmd("PUB t", []byte("x"))
	if typ, data, _ := c.read(); typ != frameTypeError || !strings.HasPrefix(string(data), "E_AUTH_FIRST") {
		t.Fatalf("PUB without AUTH: type %d %q", typ, data)
	}

	// The right secret grants publish.
	c = dialV2(t, n.TCPAddr())
	identify(c)
	c.cmd("AUTH", []byte("s3cret"))
	typ, data, err := c.read()
	if err != nil || typ != frameTypeResponse {
		t.Fatalf("AUTH: type %d %q %v", typ, data, err)
	}
	var resp struct {
		Identity        string `json:"identity"`
		IdentityURL     string `json:"identity_url"`
		PermissionCount int    `json:"permission_count"`
	}
	if err := json.Unmarshal(data, &resp); err != nil {
		t.Fatalf("AUTH response %q: %v", data, err)
	}
	if resp.Identity != AuthIdentity || resp.PermissionCount != 1 {
		t.Fatalf("AUTH response %q", data)
	}
	c.pub("t", "authorized")

	// A wrong secret fails.
	c = dialV2(t, n.TCPAddr())
	identify(c)
	c.cmd("AUTH", []byte("wrong"))
	if typ, data, _ := c.read(); typ != frameTypeError || !strings.HasPrefix(string(data), "E_AUTH_FAILED") {
		t.Fatalf("AUTH with a wrong secret: type %d %q", typ, data)
	}
}

func TestProxy(t *testing.T) {
	t.Parallel()
	n := Start(t)
	p := NewProxy(t, n.TCPAddr())

	c := dialV2(t, p.Addr())
	c.pub("t", "via proxy")
	if got := p.Conns(); got != 1 {
		t.Fatalf("Conns = %d", got)
	}

	p.Cut()
	if _, _, err := c.read(); err == nil {
		t.Fatal("read after Cut succeeded")
	} else {
		t.Logf("read after Cut: %v", err)
	}

	// New connections still work.
	c = dialV2(t, p.Addr())
	c.pub("t", "again")
	if got := p.Conns(); got != 2 {
		t.Fatalf("Conns = %d", got)
	}
	// Half-close propagates: nsqd sees EOF and closes its side.
	c.conn.(*net.TCPConn).CloseWrite()
	if _, _, err := c.read(); err == nil {
		t.Fatal("expected EOF after half-close")
	}

	msgs := n.Consume(t, "t", 2, 10*time.Second)
	if string(msgs[0].Body) != "via proxy" || string(msgs[1].Body) != "again" {
		t.Fatalf("got %q %q", msgs[0].Body, msgs[1].Body)
	}
	// Close cuts open connections and waits for the proxy goroutines.
	c = dialV2(t, p.Addr())
	c.pub("t", "last")
	p.Close()
	p.Close() // idempotent
	if _, _, err := c.read(); err == nil {
		t.Fatal("read after Close succeeded")
	}
	if got := p.Conns(); got != 3 {
		t.Fatalf("Conns = %d", got)
	}
}

func TestStartArgsOverride(t *testing.T) {
	t.Parallel()
	// Reserve a free port, then hand it to nsqd explicitly.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dataPath := t.TempDir()
	n := Start(t, "--tcp-address", addr, "--data-path="+dataPath, "--log-level=debug")
	if n.TCPAddr() != addr {
		t.Fatalf("TCPAddr = %s, want %s", n.TCPAddr(), addr)
	}
	if _, err := os.Stat(dataPath + "/nsqd.dat"); err != nil {
		t.Fatalf("data path not used: %v", err)
	}
	if strings.Count(n.Log(), "--tcp-address=") != 1 {
		t.Fatalf("duplicate --tcp-address:\n%s", n.Log())
	}
}
