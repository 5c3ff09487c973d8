package fakensqd

import (
	"bufio"
	"compress/flate"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/golang/snappy"
)

// memPair dials a fresh in-memory listener and returns both ends.
func memPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	l := ListenMem()
	t.Cleanup(func() { l.Close() })
	client, err := DialMem(context.Background(), l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return client, server
}

func TestMemConnRoundTripAndEOF(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, s := memPair(t)
		if !IsMemAddr(c.RemoteAddr().String()) || c.RemoteAddr().String() != s.LocalAddr().String() {
			t.Errorf("addresses: client remote %s, server local %s", c.RemoteAddr(), s.LocalAddr())
		}
		if _, err := c.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		c.Close()
		got, err := io.ReadAll(s)
		if err != nil || string(got) != "hello" {
			t.Errorf("server read %q, %v; want the bytes sent before the close, then EOF", got, err)
		}
		if _, err := s.Write([]byte("x")); !errors.Is(err, syscall.EPIPE) {
			t.Errorf("write to a closed peer: %v, want EPIPE", err)
		}
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
			t.Errorf("read after own close: %v, want net.ErrClosed", err)
		}
	})
}

// A writer blocks once the peer holds memBufferSize unread bytes, and its
// write deadline ends the wait, on the bubble's clock.
func TestMemConnWriteBlocksAndTimesOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, _ := memPair(t)
		c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		start := time.Now()
		n, err := c.Write(make([]byte, memBufferSize+1))
		if n != memBufferSize || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("Write = %d, %v; want %d, a deadline error", n, err, memBufferSize)
		}
		if d := time.Since(start); d != 100*time.Millisecond {
			t.Errorf("the write gave up after %s, want 100ms", d)
		}
	})
}

// A read deadline moved while a read waits takes effect at once: a past one
// interrupts it.
func TestMemConnReadDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, _ := memPair(t)
		c.SetReadDeadline(time.Now().Add(time.Hour))
		errc := make(chan error, 1)
		go func() {
			_, err := c.Read(make([]byte, 1))
			errc <- err
		}()
		synctest.Wait()
		c.SetReadDeadline(time.Unix(1, 0))
		if err := <-errc; !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("read: %v, want a deadline error", err)
		}
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		start := time.Now()
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) || time.Since(start) != 50*time.Millisecond {
			t.Errorf("read: %v after %s, want a deadline error after 50ms", err, time.Since(start))
		}
	})
}

// Reset drops what the peer had not read, and its reads and writes fail
// with ECONNRESET; the peer's PeerClosed channel is closed.
func TestMemConnReset(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, s := memPair(t)
		s.Write([]byte("lost"))
		s.(resetter).Reset()
		if _, err := c.Read(make([]byte, 4)); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("read after reset: %v, want ECONNRESET", err)
		}
		if _, err := c.Write([]byte("x")); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("write after reset: %v, want ECONNRESET", err)
		}
		select {
		case <-s.(*memConn).link.gone[1]:
		default:
			t.Error("the reset end is not gone")
		}
	})
}

func TestDialMemRefusedAndCancelled(t *testing.T) {
	_, err := DialMem(context.Background(), MemNetwork+"-0:4150")
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial to nothing: %v, want ECONNREFUSED", err)
	}
	l := ListenMem()
	l.Close()
	if _, err := DialMem(context.Background(), l.Addr().String()); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial to a closed listener: %v, want ECONNREFUSED", err)
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept on a closed listener: %v, want net.ErrClosed", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := DialMem(ctx, l.Addr().String()); !errors.Is(err, context.Canceled) {
		t.Errorf("dial with a cancelled context: %v, want context.Canceled", err)
	}
	if IsMemAddr("127.0.0.1:4150") {
		t.Error("a TCP address taken for an in-memory one")
	}
}

// A fake on the in-memory network works inside a bubble: its timeouts run
// on the bubble's clock, Try methods never fail the test, PeerClosed says
// when the client gives up.
func TestNewMemInBubble(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := NewMem(t)
		nc, err := DialMem(context.Background(), s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		c := s.Accept()
		if c.PeerClosed() == nil {
			t.Fatal("an in-memory Conn has no PeerClosed channel")
		}
		nc.Write([]byte("  V1"))
		if err := c.TryReadMagic(time.Second); !errors.Is(err, ErrMalformed) {
			t.Errorf("TryReadMagic of a wrong magic: %v, want ErrMalformed", err)
		}
		start := time.Now()
		if _, err := c.TryReadCommand(time.Second); !errors.Is(err, os.ErrDeadlineExceeded) || time.Since(start) != time.Second {
			t.Errorf("TryReadCommand: %v after %s, want a deadline error after 1s", err, time.Since(start))
		}
		nc.Close()
		<-c.PeerClosed()
		if err := c.TryWrite([]byte("x")); err == nil {
			t.Error("TryWrite to a closed client returned no error")
		}
	})
}

// The upgrades speak what the client speaks after nsqd's IDENTIFY answer:
// TLS, then snappy or deflate, both ways.
func TestUpgrades(t *testing.T) {
	for _, tc := range []struct {
		name       string
		tls        bool
		compressed string
	}{
		{"tls", true, ""},
		{"snappy", false, "snappy"},
		{"deflate", false, "deflate"},
		{"tls+snappy", true, "snappy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := NewMem(t)
				var raw net.Conn
				raw, err := DialMem(context.Background(), s.Addr())
				if err != nil {
					t.Fatal(err)
				}
				c := s.Accept()
				done := make(chan error, 1)
				go func() {
					if tc.tls {
						if err := c.UpgradeTLS(testTLSConfig(t)); err != nil {
							done <- err
							return
						}
					}
					var err error
					switch tc.compressed {
					case "snappy":
						err = c.UpgradeSnappy()
					case "deflate":
						err = c.UpgradeDeflate(6)
					}
					if err == nil {
						err = c.TryWrite(AppendFrame(nil, FrameTypeResponse, []byte(ResponseOK)))
					}
					done <- err
				}()
				var conn net.Conn = raw
				if tc.tls {
					tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true})
					if err := tc.Handshake(); err != nil {
						t.Fatal(err)
					}
					conn = tc
				}
				var r io.Reader = conn
				var w io.Writer = conn
				flush := func() error { return nil }
				switch tc.compressed {
				case "snappy":
					r = snappy.NewReader(conn)
					sw := snappy.NewBufferedWriter(conn)
					w, flush = sw, sw.Flush
				case "deflate":
					r = flate.NewReader(conn)
					fw, _ := flate.NewWriter(conn, 6)
					w, flush = fw, fw.Flush
				}
				frame := make([]byte, 10)
				if _, err := io.ReadFull(bufio.NewReader(r), frame); err != nil || string(frame[8:]) != "OK" {
					t.Fatalf("client read %q, %v; want the OK frame", frame, err)
				}
				if err := <-done; err != nil {
					t.Fatal(err)
				}
				w.Write(cmd("PUB t", []byte("hello")))
				if err := flush(); err != nil {
					t.Fatal(err)
				}
				got := c.Expect("PUB")
				if string(got.Body) != "hello" {
					t.Errorf("the fake read %s, want PUB t hello", got)
				}
			})
		})
	}
}

// testTLSConfig returns a server config with a fresh self-signed ECDSA
// certificate, valid on the bubble's clock (which starts in 2000).
func testTLSConfig(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Date(1990, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:     time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}
