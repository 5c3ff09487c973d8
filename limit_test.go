package nsq

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPendingLimitHoldsUnderContention: 8 goroutines take and give back
// room of random sizes, with and without waiting, 20,000 times each. What
// they hold at once never breaks the limit (at most maxCount publishes and
// maxBytes bytes, except one publish alone, which always fits), no waiter
// is left waiting for free room (the test would hang), and at the end
// nothing is held.
func TestPendingLimitHoldsUnderContention(t *testing.T) {
	const maxCount, maxBytes = 5, 1000
	var l pendingLimit
	l.init(maxCount, maxBytes)
	var heldCount, heldBytes atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for range 20000 {
				size := rng.Int64N(600) // sometimes two do not fit together
				if rng.IntN(2) == 0 {
					if !l.tryAcquire(size) {
						continue
					}
				} else if err := l.acquire(context.Background(), size, nil); err != nil {
					t.Error(err)
					return
				}
				c, b := heldCount.Add(1), heldBytes.Add(size)
				if c > 1 && (c > maxCount || b > maxBytes) {
					t.Errorf("held %d publishes of %d bytes in all: over the limit", c, b)
				}
				heldCount.Add(-1)
				heldBytes.Add(-size)
				l.release(1, size)
			}
		}()
	}
	wg.Wait()
	c, b := l.pending()
	assert.Equal(t, [2]int64{0, 0}, [2]int64{c, b})
}

// TestPendingLimitWaits: a publish that does not fit waits for room (or
// fails ErrPendingFull when told not to wait), until room frees, its
// context ends or stop closes; one publish larger than the limit fits
// when nothing is held.
func TestPendingLimitWaits(t *testing.T) {
	var l pendingLimit
	l.init(2, 200)
	require.True(t, l.tryAcquire(1000), "one publish alone always fits")
	assert.False(t, l.tryAcquire(1))
	assert.ErrorIs(t, l.waitFits(context.Background(), 1, nil, false), ErrPendingFull)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, l.acquire(ctx, 1, nil), context.DeadlineExceeded)
	stop := make(chan struct{})
	close(stop)
	assert.ErrorIs(t, l.acquire(context.Background(), 1, stop), ErrStopped)

	got := make(chan error, 2)
	go func() { got <- l.acquire(context.Background(), 60, nil) }()
	go func() { got <- l.waitFits(context.Background(), 60, nil, true) }()
	l.take(1, 5) // taken whether it fits or not
	c, b := l.pending()
	assert.Equal(t, [2]int64{2, 1005}, [2]int64{c, b})
	l.release(2, 1005)
	require.NoError(t, <-got)
	require.NoError(t, <-got)
	c, b = l.pending()
	assert.Equal(t, [2]int64{1, 60}, [2]int64{c, b}, "acquire took room, waitFits did not")
}
