package compat

import (
	"encoding/json"
	"testing"
	"time"

	gonsq "github.com/nsqio/go-nsq"
	nsq "github.com/nsqkit/go-nsq"
	"github.com/nsqkit/go-nsq/internal/fakensqd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// gonsqDelegate is a go-nsq ConnDelegate that does nothing; go-nsq code
// passes such delegates to our NewConn too.
type gonsqDelegate struct{}

func (gonsqDelegate) OnResponse(*gonsq.Conn, []byte)                {}
func (gonsqDelegate) OnError(*gonsq.Conn, []byte)                   {}
func (gonsqDelegate) OnMessage(*gonsq.Conn, *gonsq.Message)         {}
func (gonsqDelegate) OnMessageFinished(*gonsq.Conn, *gonsq.Message) {}
func (gonsqDelegate) OnMessageRequeued(*gonsq.Conn, *gonsq.Message) {}
func (gonsqDelegate) OnBackoff(*gonsq.Conn)                         {}
func (gonsqDelegate) OnContinue(*gonsq.Conn)                        {}
func (gonsqDelegate) OnResume(*gonsq.Conn)                          {}
func (gonsqDelegate) OnIOError(*gonsq.Conn, error)                  {}
func (gonsqDelegate) OnHeartbeat(*gonsq.Conn)                       {}
func (gonsqDelegate) OnClose(*gonsq.Conn)                           {}

type ourDelegate struct{}

func (ourDelegate) OnResponse(*nsq.Conn, []byte) {}
func (ourDelegate) OnError(*nsq.Conn, []byte)    {}
func (ourDelegate) OnIOError(*nsq.Conn, error)   {}
func (ourDelegate) OnHeartbeat(*nsq.Conn)        {}
func (ourDelegate) OnClose(*nsq.Conn)            {}

// identifyBody connects with connect to the fake nsqd and returns the
// IDENTIFY body it sent, decoded.
func identifyBody(t *testing.T, s *fakensqd.Server, connect func() error) map[string]any {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- connect() }()
	c := s.Accept()
	cmd := c.Handshake(nil)
	var err error
	within(t, "Connect", func() { err = <-done })
	require.NoError(t, err)
	c.Close()
	var body map[string]any
	require.NoError(t, json.Unmarshal(cmd.Body, &body))
	return body
}

// IDENTIFY carries the duration options as go-nsq's does, negative and
// sub-millisecond values included: whole milliseconds, -1 for -1ns.
func TestIdentifyDurations(t *testing.T) {
	s := fakensqd.New(t)
	for _, d := range []time.Duration{-1, -time.Millisecond, -1500 * time.Microsecond, -time.Second, 0,
		500 * time.Microsecond, time.Second, 1500 * time.Microsecond, 250 * time.Millisecond} {
		gc, oc := gonsq.NewConfig(), nsq.NewConfig()
		gc.HeartbeatInterval, oc.HeartbeatInterval = d, d
		gc.OutputBufferTimeout, oc.OutputBufferTimeout = d, d
		gc.MsgTimeout, oc.MsgTimeout = d, d
		g := gonsq.NewConn(s.Addr(), gc, gonsqDelegate{})
		g.SetLogger(discard, gonsq.LogLevelError, "")
		gbody := identifyBody(t, s, func() error { _, err := g.Connect(); return err })
		o := nsq.NewConn(s.Addr(), oc, ourDelegate{})
		obody := identifyBody(t, s, func() error { _, err := o.Connect(); return err })
		g.Close()
		o.Close()
		for _, key := range []string{"heartbeat_interval", "output_buffer_timeout", "msg_timeout"} {
			assert.Equal(t, gbody[key], obody[key], "%s for %v", key, d)
		}
		delete(gbody, "user_agent")
		delete(obody, "user_agent")
		assert.Equal(t, gbody, obody, "the whole IDENTIFY body, but user_agent, for %v", d)
	}
}
