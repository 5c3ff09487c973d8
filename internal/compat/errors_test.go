package compat

import (
	"errors"
	"io"
	"log"
	"net"
	"strings"
	"testing"
	"time"

	gonsq "github.com/nsqio/go-nsq"
	nsq "github.com/nsqkit/go-nsq"
	"github.com/nsqkit/go-nsq/internal/fakensqd"
	"github.com/nsqkit/go-nsq/internal/nsqdtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var discard = log.New(io.Discard, "", 0)

// producers returns a go-nsq and a nsqkit producer to addr, each with a
// Config set by set (called once for each library's Config).
func producers(t *testing.T, addr string, setG func(*gonsq.Config), setO func(*nsq.Config)) (*gonsq.Producer, *nsq.Producer) {
	t.Helper()
	gc, oc := gonsq.NewConfig(), nsq.NewConfig()
	if setG != nil {
		setG(gc)
		setO(oc)
	}
	g, err := gonsq.NewProducer(addr, gc)
	require.NoError(t, err)
	g.SetLogger(discard, gonsq.LogLevelError)
	o, err := nsq.NewProducer(addr, oc)
	require.NoError(t, err)
	o.SetLogger(discard, nsq.LogLevelError)
	t.Cleanup(func() {
		g.Stop()
		o.Stop()
	})
	return g, o
}

// within fails the test if f has not returned after 10s.
func within(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not return within 10s", what)
	}
}

// An IDENTIFY nsqd refuses: both libraries return the ErrIdentify value, so
// go-nsq's own TestProducerHeartbeat assertion err.(ErrIdentify) holds for
// both. Ours also classifies it as never sent, and PublishAsync delivers the
// same value on doneChan (go-nsq returns it from the call).
func TestErrIdentifyValue(t *testing.T) {
	n := nsqdtest.Start(t)
	const reason = "E_BAD_BODY IDENTIFY heartbeat interval (100) is invalid"
	hb := func(c interface{ Set(string, any) error }) { require.NoError(t, c.Set("heartbeat_interval", "100ms")) }
	g, o := producers(t, n.TCPAddr(), func(c *gonsq.Config) { hb(c) }, func(c *nsq.Config) { hb(c) })

	gerr := g.Publish("identify", []byte("x"))
	var oerr error
	within(t, "Publish", func() { oerr = o.Publish("identify", []byte("x")) })
	gid, ok := gerr.(gonsq.ErrIdentify)
	require.True(t, ok, "go-nsq: %#v", gerr)
	oid, ok := oerr.(nsq.ErrIdentify)
	require.True(t, ok, "ours: %#v", oerr)
	assert.Equal(t, reason, gid.Reason)
	assert.Equal(t, gid.Reason, oid.Reason)
	assert.Equal(t, gerr.Error(), oerr.Error())
	assert.ErrorIs(t, oerr, nsq.ErrNeverSent)
	assert.ErrorIs(t, oerr, nsq.ErrNotConnected)

	gerr = g.PublishAsync("identify", []byte("x"), make(chan *gonsq.ProducerTransaction, 1))
	done := make(chan *nsq.ProducerTransaction, 1)
	require.NoError(t, o.PublishAsync("identify", []byte("x"), done))
	var tx *nsq.ProducerTransaction
	within(t, "PublishAsync's result", func() { tx = <-done })
	assert.Equal(t, gonsq.ErrIdentify{Reason: reason}, gerr)
	assert.Equal(t, nsq.ErrIdentify{Reason: reason}, tx.Error)
}

// A publish nsqd refuses: both return the ErrProtocol value, from Publish
// and on doneChan; a refusal is neither never sent nor an unknown outcome.
func TestErrProtocolValue(t *testing.T) {
	n := nsqdtest.Start(t, "--max-msg-size=1024")
	const reason = "E_BAD_MESSAGE PUB message too big 2000 > 1024"
	big := make([]byte, 2000)

	g, o := producers(t, n.TCPAddr(), nil, nil)
	gerr := g.Publish("refused", big)
	var oerr error
	within(t, "Publish", func() { oerr = o.Publish("refused", big) })
	assert.Equal(t, gonsq.ErrProtocol{Reason: reason}, gerr)
	assert.Equal(t, nsq.ErrProtocol{Reason: reason}, oerr)
	for _, class := range []error{nsq.ErrNeverSent, nsq.ErrUnknownOutcome, nsq.ErrNotConnected} {
		assert.False(t, errors.Is(oerr, class), "%v", class)
	}

	// On doneChan (fresh producers: ours refuses later over-limit bodies at
	// the call, having learned nsqd's limit).
	g, o = producers(t, n.TCPAddr(), nil, nil)
	gdone := make(chan *gonsq.ProducerTransaction, 1)
	odone := make(chan *nsq.ProducerTransaction, 1)
	require.NoError(t, g.PublishAsync("refused", big, gdone))
	require.NoError(t, o.PublishAsync("refused", big, odone))
	var gtx *gonsq.ProducerTransaction
	var otx *nsq.ProducerTransaction
	within(t, "PublishAsync's results", func() { gtx, otx = <-gdone, <-odone })
	assert.Equal(t, gonsq.ErrProtocol{Reason: reason}, gtx.Error)
	assert.Equal(t, nsq.ErrProtocol{Reason: reason}, otx.Error)
}

// E_MPUB_FAILED (nsqd failed while storing an MPUB's messages; a real nsqd
// does it only on a failing disk, so a scripted fake sends it): the
// ErrProtocol value in both, and ours classifies it as an unknown outcome.
func TestErrProtocolMPUBFailedValue(t *testing.T) {
	const reason = "E_MPUB_FAILED MPUB failed disk full"
	s := fakensqd.New(t)
	g, o := producers(t, s.Addr(), nil, nil)
	script := func() {
		c := s.Accept()
		c.Handshake(nil)
		c.Expect("MPUB")
		c.Error(reason)
		c.Close()
	}
	bodies := [][]byte{[]byte("a"), []byte("b")}

	gres := make(chan error, 1)
	go func() { gres <- g.MultiPublish("mpub", bodies) }()
	script()
	var gerr error
	within(t, "go-nsq MultiPublish", func() { gerr = <-gres })

	ores := make(chan error, 1)
	go func() { ores <- o.MultiPublish("mpub", bodies) }()
	script()
	var oerr error
	within(t, "MultiPublish", func() { oerr = <-ores })

	assert.Equal(t, gonsq.ErrProtocol{Reason: reason}, gerr)
	assert.Equal(t, nsq.ErrProtocol{Reason: reason}, oerr)
	assert.ErrorIs(t, oerr, nsq.ErrUnknownOutcome)
	assert.ErrorIs(t, oerr, nsq.ErrNotConnected)
	assert.NotErrorIs(t, oerr, nsq.ErrNeverSent)
}

// After Stop, every call returns ErrStopped itself, in both.
func TestErrStoppedValue(t *testing.T) {
	n := nsqdtest.Start(t)
	g, o := producers(t, n.TCPAddr(), nil, nil)
	require.NoError(t, g.Publish("stopped", []byte("x")))
	require.NoError(t, o.Publish("stopped", []byte("x")))
	g.Stop()
	o.Stop()
	calls := []struct {
		name string
		g    func() error
		o    func() error
	}{
		{"Publish", func() error { return g.Publish("t", []byte("x")) }, func() error { return o.Publish("t", []byte("x")) }},
		{"MultiPublish", func() error { return g.MultiPublish("t", [][]byte{[]byte("x")}) }, func() error { return o.MultiPublish("t", [][]byte{[]byte("x")}) }},
		{"DeferredPublish", func() error { return g.DeferredPublish("t", time.Second, []byte("x")) }, func() error { return o.DeferredPublish("t", time.Second, []byte("x")) }},
		{"PublishAsync", func() error { return g.PublishAsync("t", []byte("x"), nil) }, func() error { return o.PublishAsync("t", []byte("x"), nil) }},
		{"Ping", g.Ping, o.Ping},
	}
	for _, c := range calls {
		assert.Same(t, gonsq.ErrStopped, c.g(), "go-nsq %s", c.name)
		assert.Same(t, nsq.ErrStopped, c.o(), "%s", c.name)
	}
}

// A dial error is a value neither library owns (*net.OpError): go-nsq
// returns it, ours wraps it with ErrNeverSent, and errors.As finds it.
func TestDialErrorWrapped(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	l.Close()
	g, o := producers(t, addr, nil, nil)

	gerr := g.Publish("t", []byte("x"))
	var oerr error
	within(t, "Publish", func() { oerr = o.Publish("t", []byte("x")) })
	var gop, oop *net.OpError
	require.ErrorAs(t, gerr, &gop)
	assert.Same(t, gerr, error(gop), "go-nsq returns the *net.OpError itself")
	require.ErrorAs(t, oerr, &oop)
	assert.ErrorIs(t, oerr, nsq.ErrNeverSent)
	assert.True(t, strings.HasSuffix(oerr.Error(), gerr.Error()), "ours %q ends with go-nsq's %q", oerr, gerr)
}
