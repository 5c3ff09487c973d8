// Package fakensqd is a scripted fake nsqd for tests of faults a real nsqd
// will not produce: half frames, garbage, stalls, unexpected frames, resets.
//
// A test drives each connection line by line, in the style of x/net/http2's
// testClientConn: expect this command, answer that frame, drop the socket
// here. Nothing is answered unless the script says so.
//
//	s := fakensqd.New(t)
//	s.Go(func(c *fakensqd.Conn) {
//		c.Handshake(nil)        // "  V2", IDENTIFY, JSON response
//		pub := c.Expect("PUB")  // the next command must be a PUB
//		c.WriteRaw(fakensqd.AppendFrame(nil, fakensqd.FrameTypeResponse, []byte("OK"))[:6])
//		c.Reset()               // half a frame, then a connection reset
//		_ = pub
//	})
//	p := newProducer(s.Addr())
//	err := p.Publish("topic", []byte("hello")) // must fail cleanly
//
// # Lifecycle
//
// [New] listens on 127.0.0.1 on a free port and accepts connections in the
// background, queueing them in arrival order. [Server.Accept] hands the next
// queued connection to the caller; [Server.Go] hands it to a script running
// on a goroutine the server owns, and [Server.Wait] waits for those scripts.
// When the test ends, the cleanup registered by New calls [Server.Close]: it
// closes the listener and every connection, then waits for the scripts and
// for Conn calls in progress. Closing the sockets unblocks every Conn call, so
// a script still waiting for a command fails then ("the fake had closed the
// connection: the server was closed while the script was using it"); a script still blocked after that (on a channel, a sleep,
// a lock) is reported as a failure too, and left behind.
//
// [NewMem] is [New] on an in-memory network instead of TCP ([ListenMem],
// [DialMem]): connections made of channels and timers, buffered like a
// socket, with deadlines, close and reset. The client under test must dial
// through [DialMem] (a dial hook); in exchange the fake works inside a
// testing/synctest bubble, where every timeout (the fake's and the
// client's) runs on the bubble's virtual clock. [Conn.UpgradeTLS],
// [Conn.UpgradeSnappy] and [Conn.UpgradeDeflate] play nsqd's upgrades;
// [Conn.PeerClosed] tells a script that stopped reading when the client
// gave up.
//
// A connection stays open after its script returns, until the script closes
// it, the client closes it, or the server closes.
//
// # Failures
//
// Methods that check something (ReadMagic, ReadCommand, Expect, Handshake,
// the writes, ExpectClosed, Accept, ...) fail the test when the check fails,
// a read times out (5 s by default, see [Conn.SetReadTimeout]) or the socket
// breaks. Methods named Try..., and AcceptTimeout, return an error instead
// and never fail the test. How a failure ends the caller depends on where
// the Conn (or the call) comes from, never on goroutine identities:
//
//   - [Server.Accept], [Server.Wait] and the methods of a Conn from Accept
//     belong to the test goroutine: a failure is t.Fatal, and the test stops
//     there. Call them from the test goroutine only (t.Fatal must not be
//     called from another one); on other goroutines use [Server.Go], or
//     AcceptTimeout and the Try... methods, which never fail the test.
//   - The methods of a Conn that a [Server.Go] script got belong to that
//     script: a failure is t.Error followed by [runtime.Goexit]: the script
//     stops there (its deferred calls run), the test is marked failed and
//     keeps running. This is safe because the server owns that goroutine;
//     t.FailNow must not be called from it and is not. A frame write made
//     on another goroutine (a heartbeat ticker) that fails ends that
//     goroutine the same way.
//
// A Conn that failed is dead: every later method on it returns at once
// without doing or reporting anything. Call [Server.Close] and
// [Server.Wait] from the test goroutine, not from a script (they wait for
// the scripts).
//
// In every case a Conn that failed closes its socket first, so the client
// under test sees the connection drop instead of waiting for an answer that
// will never come. Failures found after the test has completed cannot be
// reported to it and are printed to standard error.
//
// A Conn is driven by one goroutine at a time; frame writes may come from
// another goroutine than reads (for example heartbeats on a ticker).
//
// The fake checks the framing of what it reads, never nsqd's rules: it
// accepts any topic, empty bodies and any number of MPUB messages, and it
// reads a PUB body even when the PUB line has no topic. Tests of nsqd's own
// answers belong against a real nsqd.
package fakensqd
