package nsq

import (
	"context"
	"sync"
	"sync/atomic"
)

// poolLimit is a ProducerPool's pendingLimit (Config.MaxPending,
// MaxPendingBytes: publishes accepted and not yet delivered), with the same
// rule (one publish always fits when nothing is pending) and a lock-free
// way in and out while there is room: the pool's callers, its routers and
// its couriers take and give back room once per publish or per batch, and
// on a contended mutex that costs more than the rest of a sync publish's
// bookkeeping. Only a caller that finds no room takes the mutex, to wait.
type poolLimit struct {
	maxCount, maxBytes int64

	count, bytes atomic.Int64 // held now, plus what callers are trying to take
	waiters      atomic.Int32 // callers waiting for room

	mu    sync.Mutex
	freed chan struct{} // guarded by mu; closed when room frees while someone waits
}

func (l *poolLimit) init(maxCount, maxBytes int64) {
	l.maxCount, l.maxBytes = maxCount, maxBytes
}

// fits reports whether a publish of size fits with c publishes of b bytes
// held: one always fits when nothing is.
func (l *poolLimit) fits(c, b, size int64) bool {
	return c == 0 || (c < l.maxCount && b+size <= l.maxBytes)
}

// tryAcquire takes room for a publish of size if there is some now. When
// the room it saw is gone once it has taken it (callers racing near the
// limit), it gives it back as a release does, waking waiters: one may have
// seen no room because of it. A waiter tries again after it registers, so
// nobody waits for room that is free.
func (l *poolLimit) tryAcquire(size int64) bool {
	if !l.fits(l.count.Load(), l.bytes.Load(), size) {
		return false
	}
	c := l.count.Add(1)
	b := l.bytes.Add(size)
	if l.fits(c-1, b-size, size) {
		return true
	}
	l.release(1, size)
	return false
}

// acquire takes room for a publish of size, waiting while there is none
// until ctx is done or stop is closed.
func (l *poolLimit) acquire(ctx context.Context, size int64, stop <-chan struct{}) error {
	if l.tryAcquire(size) {
		return nil
	}
	l.waiters.Add(1)
	defer l.waiters.Add(-1)
	for {
		l.mu.Lock()
		if l.freed == nil {
			l.freed = make(chan struct{})
		}
		freed := l.freed
		l.mu.Unlock()
		// Registered before this try: a release after it closes freed.
		if l.tryAcquire(size) {
			return nil
		}
		select {
		case <-freed:
		case <-ctx.Done():
			return ctx.Err()
		case <-stop:
			return ErrStopped
		}
	}
}

// release gives back the room of n publishes holding bytes in all.
func (l *poolLimit) release(n, bytes int64) {
	l.count.Add(-n)
	l.bytes.Add(-bytes)
	if l.waiters.Load() == 0 {
		return
	}
	l.mu.Lock()
	if l.freed != nil {
		close(l.freed)
		l.freed = nil
	}
	l.mu.Unlock()
}

// pending returns the publishes and bytes held now.
func (l *poolLimit) pending() (int64, int64) {
	return l.count.Load(), l.bytes.Load()
}
