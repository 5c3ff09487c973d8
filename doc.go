// Package nsq is a producer client for NSQ (https://nsq.io): a drop-in
// replacement for the producer side of github.com/nsqio/go-nsq v1.1.0. Code
// that publishes with go-nsq builds and behaves the same after changing its
// import path to github.com/nsqkit/go-nsq; the package name stays nsq.
//
// # Lifecycle
//
// [NewProducer] validates and copies a [Config] (made by [NewConfig]) and
// returns a [Producer] for one nsqd TCP address. Nothing connects until the
// first publish (or [Producer.Ping]). A Producer is safe for concurrent use;
// all its callers share one connection. If the connection fails, the next
// publish reconnects, with exponential backoff and jitter between failed
// attempts (Config.ReconnectBackoff up to Config.MaxReconnectBackoff). A
// connection that ends within 5 seconds without nsqd having answered
// anything on it counts as a failed attempt, as one that could not be made:
// what waits for it fails with [ErrNeverSent].
// [Producer.Stop] refuses new publishes with [ErrStopped], waits (up to
// Config.StopTimeout) for nsqd's answers to everything already accepted, then
// closes the connection; no goroutine outlives it.
//
// # Publishing
//
// [Producer.Publish], [Producer.MultiPublish] and [Producer.DeferredPublish]
// wait for nsqd's answer. [Producer.PublishAsync] and the other *Async methods
// return once the publish is accepted, and later send a
// [ProducerTransaction] with the result on the doneChan they were given.
// The results sent to one doneChan arrive in the order the publishes were
// accepted; a slow reader of one doneChan stalls neither the connection nor
// other callers: its results wait for it, in order, and once
// Config.MaxPending of them (or Config.MaxPendingBytes) wait, publishes to
// that channel wait for room as for the producer's own limit
// ([Producer.TryPublishAsync] returns [ErrPendingFull]). A nil doneChan
// drops the result.
//
// The *Context methods ([Producer.PublishContext] and friends) stop waiting
// when their context ends; [Producer.Flush] waits until everything accepted
// before it has its answer; [Producer.Stats] reports counters.
//
// Under load the producer writes everything queued with one flush, and runs
// of publishes to the same topic that are queued together (PUBs, and the
// messages of MultiPublishes) go out as one MPUB (Config.AutoBatch), each
// publish still completing with its own result. A lone publish is never
// delayed to fill a batch. (nsqd stores an MPUB's messages one by one: when
// it fails one midway with E_MPUB_FAILED, every publish of that MPUB ends
// ErrUnknownOutcome, as a MultiPublish alone would.)
//
// # Guarantees
//
// Every publish the producer accepts (the call returned nil, or a sync call
// is waiting) completes exactly once, and its error says what happened:
//
//   - nil: nsqd answered OK; the message is stored.
//   - [ErrProtocol]: nsqd refused this publish (Reason is nsqd's text, for
//     example "E_BAD_MESSAGE PUB message too big 2000 > 1024"); it was not
//     stored. nsqd closes the connection after refusing a publish, without
//     executing the commands behind it: those are sent again on a new
//     connection, so one bad publish fails alone.
//   - [ErrNeverSent] (errors.Is): no byte of it reached nsqd, for example
//     because nsqd could not be reached; publishing it again is safe.
//   - [ErrUnknownOutcome] (errors.Is): the connection died after it was
//     written and before nsqd answered; nsqd may or may not have stored it.
//     Also for nsqd's E_MPUB_FAILED, after which part of the MPUB may be
//     stored: the error is then the ErrProtocol value, whose Is says so.
//
// errors.Is(err, [ErrNotConnected]) holds for both of the last two, as
// go-nsq code expects. (nsqd closes the connection with our pipelined bytes
// unread, so its kernel sends a reset, which can overtake the error frame:
// then nobody can tell which publish nsqd refused, and all the unanswered
// ones fail with ErrUnknownOutcome.)
//
// nsqd does not announce its size limits, but states them when it refuses a
// body ("E_BAD_MESSAGE PUB message too big 2000 > 1024"): then the larger
// bodies already queued fail with [ErrTooLarge] (and [ErrNeverSent]), larger
// ones are refused at the call until the next connection is made (it may
// reach an nsqd with other limits), and of an automatic batch refused for
// one too big message, only the publish holding it fails.
//
// Invalid input is refused at the call, before it can reach the connection
// other publishes share: an invalid topic name
// ([ErrInvalidTopic]; nsqd would otherwise publish "PUB a b" to topic "a"),
// an empty body ([ErrEmptyBody]), a body over Config.MaxMsgSize or an MPUB
// over Config.MaxBodySize ([ErrTooLarge]), a delay outside
// [0, Config.MaxDeferredDelay] ([ErrInvalidDelay]).
//
// While nsqd is unreachable a publish fails within DialTimeout plus at most
// MaxReconnectBackoff (1 s by default), never hangs. A server that stops
// reading fails the connection after WriteTimeout, one that stops answering
// after ReadTimeout, and a frame larger than Config.MaxFrameSize (or an HTTP
// answer) is refused without being allocated.
//
// # Publishing to many nsqd: ProducerPool
//
// A [ProducerPool] publishes over many nsqd, each through its own Producer:
// a static list ([NewProducerPool]) or the nodes nsqlookupd lists
// ([ProducerPool.ConnectToNSQLookupd], GET /nodes every
// Config.LookupdPollInterval). It has every publishing method of Producer,
// with the same signatures; code written against [Publisher] takes either.
// Publishes wait in one queue and each node that is up takes the next ones
// while it holds fewer than three automatic batches unanswered, so a stream
// spreads by speed and each node still batches into MPUBs. Its guarantees:
//
//   - Each accepted publish completes exactly once, with the same errors
//     as a Producer's: nil means stored on one node.
//   - A publish that never reached a node (ErrNeverSent, or nsqd's
//     E_PUB_FAILED / E_DPUB_FAILED for a single message) goes to another
//     node, up to Config.PoolMaxAttempts nodes and while a *Context caller's
//     context lasts. One that may be stored (ErrUnknownOutcome, also
//     E_MPUB_FAILED) is never sent again, so the pool never stores a
//     publish twice; one nsqd refused (ErrProtocol) is not retried.
//   - A node that fails to connect takes nothing until its Producer has
//     connected again (with backoff and jitter); one that lost a connection
//     with publishes in flight takes nothing until it has reconnected. When
//     no node is up, queued publishes fail with ErrNeverSent within
//     DialTimeout plus MaxReconnectBackoff. A node that stops answering
//     holds at most its three batches (they end ErrUnknownOutcome after
//     ReadTimeout) while the other nodes take the rest.
//   - Order: publishes handed to one node are sent and completed in the
//     order the pool accepted them; there is no order across nodes, so
//     results on one doneChan may arrive out of publishing order, and a
//     publish moved to another node completes after later ones.
//     [ProducerPool.PublishByKey] and [ProducerPool.PublishAsyncByKey] send
//     one key to one node, in order, while the nodes that are up do not
//     change.
//   - [ProducerPool.Stop] waits up to Config.StopTimeout for every accepted
//     publish, then stops the nodes' Producers; no goroutine outlives it.
//
// # Reusing bodies
//
// A sync call's body may be reused once it returns. MultiPublishAsync copies
// its bodies, so they may be reused once it returns. PublishAsync's and
// DeferredPublishAsync's body must stay untouched until the result arrives.
//
// # Compatibility
//
// Connection errors reach async callers through doneChan rather than from
// the *Async call itself, since connecting happens in the background. Logs
// use go-nsq's format. See the README for the full list of differences.
package nsq
