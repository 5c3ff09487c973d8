package nsq

import (
	"context"
	"sync"
	"sync/atomic"
)

// pendingLimit bounds publishes accepted and not yet completed (and
// delivered), by count and by bytes: Config.MaxPending and MaxPendingBytes
// of a Producer, of a ProducerPool, and of each courier's backlog. One
// publish always fits when nothing is held, however large.
//
// The way in and out is lock-free while there is room: callers, routers
// and couriers take and give back room once per publish or per batch, and
// on a contended mutex that would cost more than the rest of a sync
// publish's bookkeeping. Only a caller that finds no room takes the mutex,
// to wait.
type pendingLimit struct {
	maxCount, maxBytes int64

	count, bytes atomic.Int64 // held now, plus what callers are trying to take
	waiters      atomic.Int32 // callers waiting for room

	mu    sync.Mutex
	freed chan struct{} // guarded by mu; closed when room frees while someone waits
}

func (l *pendingLimit) init(maxCount, maxBytes int64) {
	l.maxCount, l.maxBytes = maxCount, maxBytes
}

// fitsWith reports whether a publish of size fits with c publishes of b
// bytes held. Alone means no count and no bytes: count and bytes are two
// atomics, so a count of 0 may be seen beside the bytes of a publish
// whose count is still to come.
func (l *pendingLimit) fitsWith(c, b, size int64) bool {
	return (c == 0 && b == 0) || (c < l.maxCount && b+size <= l.maxBytes)
}

// fits reports whether a publish of size fits now.
func (l *pendingLimit) fits(size int64) bool {
	return l.fitsWith(l.count.Load(), l.bytes.Load(), size)
}

// tryAcquire takes room for a publish of size if there is some now. When
// the room it saw is gone once it has taken it (callers racing near the
// limit), it gives it back as a release does, waking waiters: one may have
// seen no room because of it. A waiter tries again after it registers, so
// nobody waits for room that is free.
func (l *pendingLimit) tryAcquire(size int64) bool {
	if !l.fits(size) {
		return false
	}
	// Taken first, then checked: every publish held has added itself to
	// both counters before its check, so of those held at any moment the
	// last to pass its check saw them all.
	c := l.count.Add(1)
	b := l.bytes.Add(size)
	if l.fitsWith(c-1, b-size, size) {
		return true
	}
	l.release(1, size)
	return false
}

// acquire takes room for a publish of size, waiting while there is none
// until ctx is done or stop is closed.
func (l *pendingLimit) acquire(ctx context.Context, size int64, stop <-chan struct{}) error {
	return l.wait(ctx, size, stop, l.tryAcquire)
}

// waitFits waits until a publish of size would fit, without taking room:
// until ctx is done or stop is closed, or, when wait is false, not at all
// (ErrPendingFull).
func (l *pendingLimit) waitFits(ctx context.Context, size int64, stop <-chan struct{}, wait bool) error {
	if l.fits(size) {
		return nil
	}
	if !wait {
		return ErrPendingFull
	}
	return l.wait(ctx, size, stop, l.fits)
}

// wait calls try(size) until it reports true: at once, then each time room
// frees, until ctx is done or stop is closed.
func (l *pendingLimit) wait(ctx context.Context, size int64, stop <-chan struct{}, try func(int64) bool) error {
	if try(size) {
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
		if try(size) {
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

// take takes room for n publishes holding bytes, whether it fits or not.
func (l *pendingLimit) take(n, bytes int64) {
	l.count.Add(n)
	l.bytes.Add(bytes)
}

// release gives back the room of n publishes holding bytes in all.
func (l *pendingLimit) release(n, bytes int64) {
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
func (l *pendingLimit) pending() (int64, int64) {
	return l.count.Load(), l.bytes.Load()
}
