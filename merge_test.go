package nsq

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nsqkit/go-nsq/internal/fakensqd"
	"github.com/nsqkit/go-nsq/internal/nsqdtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Automatic batching merges the MultiPublishes queued together for one
// topic, with the PUBs among them, into one MPUB: nsqd answers one command
// instead of one per call. A DPUB, another topic, and the limits
// (max_batch_messages, max_batch_bytes, auto_batch) end a batch.

// wireOf is a command as the fake read it: its name, topic and messages.
func wireOf(c fakensqd.Command) string {
	msgs := strs(c.Messages)
	if c.Name != "MPUB" {
		msgs = []string{string(c.Body)}
	}
	return fmt.Sprintf("%s %s %v", c.Name, c.Params[0], msgs)
}

func TestMultiPublishesShareAnAutomaticMPUB(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		s := fakensqd.NewMem(t)
		p := newTestProducer(t, s.Addr(), nil)
		done := make(chan *ProducerTransaction, 16)

		// Everything is queued before the connection is up, so it leaves in
		// one write.
		require.NoError(t, p.PublishAsync("t", []byte("p0"), done, 0))
		require.NoError(t, p.MultiPublishAsync("t", bodiesOf([]string{"a", "b"}), done, 1))
		require.NoError(t, p.PublishAsync("t", []byte("p1"), done, 2))
		syncErr := make(chan error, 1)
		go func() { syncErr <- p.MultiPublish("t", bodiesOf([]string{"s1", "s2"})) }()
		synctest.Wait() // the sync call is queued behind p1
		require.NoError(t, p.MultiPublishAsync("u", bodiesOf([]string{"x"}), done, 3))
		require.NoError(t, p.DeferredPublishAsync("u", time.Second, []byte("d"), done, 4))
		require.NoError(t, p.MultiPublishAsync("u", bodiesOf([]string{"y", "z"}), done, 5))
		require.NoError(t, p.MultiPublishAsync("u", bodiesOf([]string{"w"}), done, 6))
		synctest.Wait()

		c := s.Accept()
		c.Handshake(nil)
		var got []string
		for range 4 {
			got = append(got, wireOf(c.ExpectPublish()))
			c.OK()
		}
		assert.Equal(t, []string{
			"MPUB t [p0 a b p1 s1 s2]", // the sync MultiPublish's bodies as they are
			"MPUB u [x]",               // alone: a DPUB comes next
			"DPUB u [d]",
			"MPUB u [y z w]",
		}, got)

		require.NoError(t, <-syncErr)
		for i := range 7 {
			tx := recvWithin(t, done, "async result")
			assert.Equal(t, []any{i}, tx.Args, "results in publish order")
			assert.NoError(t, tx.Error)
		}
		st := p.Stats()
		assert.Equal(t, uint64(2), st.Batches, "two commands carried the messages of several publishes")
		assert.Equal(t, uint64(9), st.BatchedMessages)
		assert.Equal(t, uint64(11), st.Published)
	})
}

func TestMergedMPUBKeepsTheBatchLimits(t *testing.T) {
	x600 := strings.Repeat("x", 600)
	for _, tc := range []struct {
		name string
		cfg  []any
		pubs [][]string // each a MultiPublishAsync, or a PublishAsync when it starts with "pub:"
		want []string
	}{
		{"max_batch_messages", []any{"max_batch_messages", 3},
			[][]string{{"a", "b"}, {"c", "d"}, {"e"}, {"pub:f"}, {"g", "h", "i", "j"}},
			[]string{"MPUB t [a b]", "MPUB t [c d e]", "PUB t [f]", "MPUB t [g h i j]"}},
		{"max_batch_bytes", []any{"max_batch_bytes", 1024},
			[][]string{{"a", "b"}, {x600}, {x600}, {"c"}},
			[]string{"MPUB t [a b " + x600 + "]", "MPUB t [" + x600 + " c]"}}, // 4+5+5+604 bytes, then 4+604+5
		{"auto_batch=false", []any{"auto_batch", false},
			[][]string{{"a"}, {"pub:b"}, {"c", "d"}},
			[]string{"MPUB t [a]", "PUB t [b]", "MPUB t [c d]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inBubble(t, func(t *testing.T) {
				s := fakensqd.NewMem(t)
				p := newTestProducer(t, s.Addr(), testConfig(t, tc.cfg...))
				done := make(chan *ProducerTransaction, len(tc.pubs))
				for i, pub := range tc.pubs {
					if body, ok := strings.CutPrefix(pub[0], "pub:"); ok {
						require.NoError(t, p.PublishAsync("t", []byte(body), done, i))
						continue
					}
					require.NoError(t, p.MultiPublishAsync("t", bodiesOf(pub), done, i))
				}
				synctest.Wait()

				c := s.Accept()
				c.Handshake(nil)
				var got []string
				for range tc.want {
					got = append(got, wireOf(c.ExpectPublish()))
					c.OK()
				}
				assert.Equal(t, tc.want, got)
				for i := range tc.pubs {
					tx := recvWithin(t, done, "async result")
					assert.Equal(t, []any{i}, tx.Args)
					assert.NoError(t, tx.Error)
				}
			})
		})
	}
}

// A merged MPUB refused because one message is over nsqd's --max-msg-size:
// the MultiPublish holding it fails with nsqd's refusal, as it would have
// alone; the others go out again and succeed.
func TestFaultMergedMPUBWithATooBigMessage(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		const reason = "E_BAD_MESSAGE MPUB message too big 2000 > 1024"
		s := fakensqd.NewMem(t)
		p := newTestProducer(t, s.Addr(), nil)
		big := string(make([]byte, 2000))

		done := make(chan *ProducerTransaction, 3)
		require.NoError(t, p.MultiPublishAsync("t", bodiesOf([]string{"m0"}), done, 0))
		require.NoError(t, p.MultiPublishAsync("t", bodiesOf([]string{"m1", big}), done, 1))
		require.NoError(t, p.PublishAsync("t", []byte("m2"), done, 2))
		synctest.Wait()

		c := s.Accept()
		c.Handshake(nil)
		assert.Equal(t, "MPUB t [m0 m1 "+big+" m2]", wireOf(c.Expect("MPUB")))
		c.Error(reason)
		c.Close()

		c = s.Accept()
		c.Handshake(nil)
		// The refused call keeps its place, settled, between the others.
		assert.Equal(t, "MPUB t [m0]", wireOf(c.ExpectPublish()))
		c.OK()
		assert.Equal(t, "PUB t [m2]", wireOf(c.ExpectPublish()))
		c.OK()

		var txs []*ProducerTransaction
		for range 3 {
			txs = append(txs, recvWithin(t, done, "async result"))
		}
		assert.NoError(t, txs[0].Error)
		assert.Equal(t, ErrProtocol{Reason: reason}, txs[1].Error)
		assert.NoError(t, txs[2].Error)
		st := p.Stats()
		assert.Equal(t, uint64(2), st.Published)
		assert.Equal(t, map[string]uint64{"E_BAD_MESSAGE": 1}, st.NsqdErrors)
	})
}

// A merged MPUB that nsqd refuses as a whole without naming a limit is
// split: each call goes out again alone, so only a bad one can fail.
func TestFaultMergedMPUBRefusedAsAWholeIsSplit(t *testing.T) {
	inBubble(t, func(t *testing.T) {
		s := fakensqd.NewMem(t)
		p := newTestProducer(t, s.Addr(), nil)
		done := make(chan *ProducerTransaction, 3)
		require.NoError(t, p.MultiPublishAsync("t", bodiesOf([]string{"a", "b"}), done, 0))
		require.NoError(t, p.PublishAsync("t", []byte("c"), done, 1))
		require.NoError(t, p.MultiPublishAsync("t", bodiesOf([]string{"d"}), done, 2))
		synctest.Wait()

		c := s.Accept()
		c.Handshake(nil)
		assert.Equal(t, "MPUB t [a b c d]", wireOf(c.Expect("MPUB")))
		c.Error("E_BAD_MESSAGE MPUB invalid message(2) body size 0")
		c.Close()

		c = s.Accept()
		c.Handshake(nil)
		var got []string
		for range 3 {
			got = append(got, wireOf(c.ExpectPublish()))
			c.OK()
		}
		assert.Equal(t, []string{"MPUB t [a b]", "PUB t [c]", "MPUB t [d]"}, got)
		for i := range 3 {
			tx := recvWithin(t, done, "async result")
			assert.Equal(t, []any{i}, tx.Args)
			assert.NoError(t, tx.Error)
		}
	})
}

// Against nsqd: goroutines mixing MultiPublishAsync, MultiPublish and
// PublishAsync on one producer, so that their calls merge as they happen
// to queue together. Every message is stored exactly once, each
// goroutine's in the order it published them, and every call succeeds.
func TestMergedMultiPublishesReachNsqdInOrder(t *testing.T) {
	parallel(t)
	n := nsqdtest.Start(t)
	p := newTestProducer(t, n.TCPAddr(), nil)
	const goroutines, calls = 4, 60
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*calls*3) // a call's error, a second PublishAsync's, an async result's
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done := make(chan *ProducerTransaction, calls)
			async := 0
			for i := range calls {
				bs := bodiesOf([]string{fmt.Sprintf("g%d.%d.0", g, i), fmt.Sprintf("g%d.%d.1", g, i)})
				switch i % 3 {
				case 0:
					errs <- p.MultiPublishAsync("merge", bs, done)
					async++
				case 1:
					errs <- p.MultiPublish("merge", bs)
				default:
					errs <- p.PublishAsync("merge", bs[0], done)
					errs <- p.PublishAsync("merge", bs[1], done)
					async += 2
				}
			}
			for range async {
				errs <- recvWithin(t, done, "async result").Error
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	const total = goroutines * calls * 2
	got := consumeBodies(t, n, "merge", total)
	next := make([]int, goroutines) // the next message each goroutine published
	for _, body := range got {
		var g, i, k int
		_, err := fmt.Sscanf(body, "g%d.%d.%d", &g, &i, &k)
		require.NoError(t, err, body)
		require.Equal(t, fmt.Sprintf("g%d.%d.%d", g, next[g]/2, next[g]%2), body, "goroutine %d's messages in order, each once", g)
		next[g]++
	}
	assert.Equal(t, []int{calls * 2, calls * 2, calls * 2, calls * 2}, next)
	st := p.Stats()
	assert.Equal(t, uint64(total), st.Published)
	t.Logf("%d automatic MPUBs carried %d of the %d messages", st.Batches, st.BatchedMessages, total)
}
