package nsq

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// ProducerStats is a snapshot of a Producer's counters, from
// [Producer.Stats]. Counts are of messages unless they say otherwise: an
// MPUB of 10 bodies that nsqd stores counts 10 in Published.
type ProducerStats struct {
	Published      uint64 // messages nsqd answered OK to
	PublishedBytes uint64 // their body bytes

	Pending      int64 // publishes accepted and not yet completed (results waiting for an unread doneChan are not counted: they hold back only that channel's publishers)
	PendingBytes int64 // their body bytes

	Refused        uint64            // publishes refused at the call (invalid input, ErrPendingFull)
	NsqdErrors     map[string]uint64 // publishes nsqd refused (ErrProtocol), by error code
	NeverSent      uint64            // publishes failed with ErrNeverSent
	UnknownOutcome uint64            // publishes failed with ErrUnknownOutcome

	Connects        uint64 // connections established
	Reconnects      uint64 // connections established after the first
	ConnectFailures uint64 // connection attempts that failed
	Heartbeats      uint64 // heartbeats received from nsqd (each answered with NOP)

	Batches         uint64  // automatic MPUB batches written: MPUBs carrying the messages of several publishes
	BatchedMessages uint64  // messages in them
	MeanBatchSize   float64 // BatchedMessages / Batches

	// Round-trip time from writing a command to nsqd's answer, over the
	// most recent answers (up to 1024).
	LatencyP50 time.Duration
	LatencyP99 time.Duration
}

// Stats returns a snapshot of the producer's counters. It is safe to call at
// any time, also after Stop.
func (p *Producer) Stats() ProducerStats {
	s := &p.stats
	count, bytes := p.limit.pending()
	out := ProducerStats{
		Published:       s.published.Load(),
		PublishedBytes:  s.publishedBytes.Load(),
		Pending:         count,
		PendingBytes:    bytes,
		Refused:         s.refused.Load(),
		NeverSent:       s.neverSent.Load(),
		UnknownOutcome:  s.unknown.Load(),
		Connects:        s.connects.Load(),
		ConnectFailures: s.connectFailures.Load(),
		Heartbeats:      s.heartbeats.Load(),
		Batches:         s.batches.Load(),
		BatchedMessages: s.batched.Load(),
	}
	if out.Connects > 1 {
		out.Reconnects = out.Connects - 1
	}
	if out.Batches > 0 {
		out.MeanBatchSize = float64(out.BatchedMessages) / float64(out.Batches)
	}
	s.mu.Lock()
	out.NsqdErrors = make(map[string]uint64, len(s.nsqdErrors))
	for code, n := range s.nsqdErrors {
		out.NsqdErrors[code] = n
	}
	lat := slices.Clone(s.latency[:s.latencyLen])
	s.mu.Unlock()
	if len(lat) > 0 {
		slices.Sort(lat)
		out.LatencyP50 = lat[(len(lat)-1)*50/100]
		out.LatencyP99 = lat[(len(lat)-1)*99/100]
	}
	return out
}

// producerStats holds the counters behind Stats. The router writes most;
// the publishing calls write refused, and the connection's read goroutine
// writes heartbeats (through the router's ConnDelegate).
type producerStats struct {
	published, publishedBytes atomic.Uint64
	refused                   atomic.Uint64
	neverSent, unknown        atomic.Uint64
	connects, connectFailures atomic.Uint64
	heartbeats                atomic.Uint64
	batches, batched          atomic.Uint64

	epoch time.Time // sentAt is measured from it

	mu         sync.Mutex
	nsqdErrors map[string]uint64             // guarded by mu
	latency    [latencySamples]time.Duration // guarded by mu; a ring
	latencyLen int                           // guarded by mu
	latencyPos int                           // guarded by mu
}

const latencySamples = 1024

func (s *producerStats) now() time.Duration { return time.Since(s.epoch) }

func (s *producerStats) addLatency(d time.Duration) {
	s.mu.Lock()
	s.latency[s.latencyPos] = d
	s.latencyPos = (s.latencyPos + 1) % latencySamples
	s.latencyLen = min(s.latencyLen+1, latencySamples)
	s.mu.Unlock()
}

func (s *producerStats) addNsqdError(code string) {
	s.mu.Lock()
	if s.nsqdErrors == nil {
		s.nsqdErrors = make(map[string]uint64)
	}
	s.nsqdErrors[code]++
	s.mu.Unlock()
}
