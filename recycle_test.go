package nsq

import (
	"bytes"
	"testing"

	"github.com/nsqkit/go-nsq/internal/nsqdtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The free list of MultiPublishAsync bodies hands back a slice large
// enough, drops one too small, keeps no slice over maxBody and no more
// than max bytes in all.
func TestBodyFreeList(t *testing.T) {
	l := bodyFreeList{ch: make(chan []byte, 8), max: 100, maxBody: 60}

	b := l.get(40)
	assert.Equal(t, 0, len(b))
	assert.Equal(t, 40, cap(b), "new, when the list is empty")
	b = append(b, "first"...)
	l.put(b)
	assert.Equal(t, int64(40), l.held.Load())
	again := l.get(30)
	assert.Equal(t, 0, len(again))
	assert.Same(t, &b[:1][0], &again[:1][0], "the same array, recycled")
	assert.Equal(t, int64(0), l.held.Load())

	l.put(again)
	bigger := l.get(50)
	assert.Equal(t, 50, cap(bigger), "the recycled one was too small: a new one")
	assert.Equal(t, int64(0), l.held.Load(), "the one too small was dropped")
	assert.Equal(t, 0, len(l.ch))

	l.put(make([]byte, 61))
	assert.Equal(t, 0, len(l.ch), "over maxBody: not kept")
	assert.Equal(t, int64(0), l.held.Load())

	l.put(make([]byte, 0, 60))
	l.put(make([]byte, 0, 40))
	l.put(make([]byte, 0, 1)) // 101 bytes: over max
	assert.Equal(t, 2, len(l.ch))
	assert.Equal(t, int64(100), l.held.Load())
}

// MultiPublishAsync's copy of the bodies is recycled once the publish has
// completed: in a steady stream a call allocates only its transaction.
func TestMultiPublishAsyncRecyclesItsBody(t *testing.T) {
	n := nsqdtest.Start(t)
	p := newTestProducer(t, n.TCPAddr(), nil)
	done := make(chan *ProducerTransaction, 1)
	bodies := [][]byte{bytes.Repeat([]byte("a"), 1000), bytes.Repeat([]byte("b"), 1000)}
	publish := func() {
		require.NoError(t, p.MultiPublishAsync("recycle", bodies, done))
		tx := <-done
		require.NoError(t, tx.Error)
		assert.Nil(t, tx.body, "the encoded copy went back to the free list")
	}
	publish() // connects
	allocs := testing.AllocsPerRun(100, publish)
	assert.Equal(t, 1.0, allocs, "allocations per MultiPublishAsync, result included")

	assert.Equal(t, uint64(2*102), p.Stats().Published, "publish, then 101 runs")
}
