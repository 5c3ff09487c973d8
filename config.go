package nsq

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// BackoffStrategy calculates how long a consumer backs off after its
// attempt-th consecutive failure. A Producer does not use it; it exists so
// that configuration code shared with go-nsq consumers compiles.
type BackoffStrategy interface {
	Calculate(attempt int) time.Duration
}

// ExponentialStrategy is the default BackoffStrategy (option value
// "exponential"): BackoffMultiplier * 2^attempt, capped at MaxBackoffDuration.
//
// A strategy installed with [Config.Set] or [NewConfig] reads those two
// fields from its Config when Calculate is called. One assigned to
// Config.BackoffStrategy directly uses the defaults (1s and 2m).
type ExponentialStrategy struct {
	cfg *Config
}

// Calculate returns BackoffMultiplier * 2^attempt, capped at
// MaxBackoffDuration. A negative attempt counts as 0.
func (s *ExponentialStrategy) Calculate(attempt int) time.Duration {
	multiplier, limit := backoffParams(s.cfg)
	return exponentialBackoff(multiplier, limit, attempt)
}

func (s *ExponentialStrategy) setConfig(c *Config) { s.cfg = c }

// FullJitterStrategy is the "full_jitter" BackoffStrategy (see
// https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/):
// a uniformly random duration in [0, d), where d is what
// [ExponentialStrategy] returns for the same attempt. It is safe for
// concurrent use. Like ExponentialStrategy, it reads BackoffMultiplier and
// MaxBackoffDuration from the Config it was installed in by [Config.Set], or
// uses the defaults (1s and 2m) when assigned directly.
type FullJitterStrategy struct {
	cfg *Config

	// int64N returns a random value in [0, n); nil means math/rand/v2's
	// Int64N. Tests replace it to get repeatable values.
	int64N func(n int64) int64
}

// Calculate returns a random duration in [0, min(BackoffMultiplier *
// 2^attempt, MaxBackoffDuration)), or 0 when that bound is 0.
func (s *FullJitterStrategy) Calculate(attempt int) time.Duration {
	multiplier, limit := backoffParams(s.cfg)
	d := exponentialBackoff(multiplier, limit, attempt)
	if d <= 0 {
		return 0
	}
	int64N := s.int64N
	if int64N == nil {
		int64N = rand.Int64N
	}
	return time.Duration(int64N(int64(d)))
}

func (s *FullJitterStrategy) setConfig(c *Config) { s.cfg = c }

// backoffParams returns the multiplier and cap a strategy bound to c uses.
func backoffParams(c *Config) (multiplier, limit time.Duration) {
	if c == nil {
		return time.Second, 2 * time.Minute
	}
	return c.BackoffMultiplier, c.MaxBackoffDuration
}

// exponentialBackoff returns multiplier * 2^attempt, capped at limit,
// without overflowing for any attempt.
func exponentialBackoff(multiplier, limit time.Duration, attempt int) time.Duration {
	if limit < 0 {
		limit = 0
	}
	if multiplier <= 0 {
		return 0
	}
	if attempt < 0 {
		attempt = 0
	}
	if attempt >= 63 || multiplier > limit>>uint(attempt) {
		return limit
	}
	return multiplier << uint(attempt)
}

// Config holds the options of a Producer (and, for drop-in compatibility
// with go-nsq v1.1.0, those of a Consumer).
//
// Create a Config with [NewConfig]: it sets the defaults listed on each
// field, and [Config.Set] and [Config.Validate] panic on a Config made any
// other way. Fields can be assigned directly or by option name with
// [Config.Set] (or [ConfigFlag] on a command line). NewProducer validates
// the Config and copies it, so changes made afterwards do not affect that
// Producer.
//
// Each field's struct tags are the single definition of its option: "opt"
// is the name [Config.Set] accepts, "default" the value [NewConfig] sets,
// and "min"/"max" the bounds [Config.Set] and [Config.Validate] enforce.
type Config struct {
	initialized bool

	// Paths given with the set-only options tls_cert and tls_key; the key
	// pair is loaded once both are known.
	tlsCertFile string
	tlsKeyFile  string

	// DialTimeout is how long connecting to nsqd (the TCP dial) may take.
	// Default 1s; 0 means no timeout.
	DialTimeout time.Duration `opt:"dial_timeout" default:"1s"`

	// ReadTimeout is how long nsqd may take to answer: the connection is
	// closed (and the publishes it carries fail with ErrUnknownOutcome)
	// when nsqd has not answered the oldest unanswered command for this
	// long, counted from when it was written (a large body may take a while
	// to write; write_timeout watches that) or from the previous answer,
	// whichever is later; or, with no command unanswered and heartbeats on, when
	// nsqd has sent nothing, not even a heartbeat, for this long. With no
	// command unanswered and heartbeats off (HeartbeatInterval -1), an idle
	// connection stays open. Default 60s, range [100ms, 5m].
	ReadTimeout time.Duration `opt:"read_timeout" min:"100ms" max:"5m" default:"60s"`
	// WriteTimeout is the deadline for each network write to nsqd.
	// Default 1s, range [100ms, 5m].
	WriteTimeout time.Duration `opt:"write_timeout" min:"100ms" max:"5m" default:"1s"`

	// LocalAddr is the local address to dial nsqd from. nil (the default)
	// lets the system choose. [Config.Set] accepts a net.Addr or a
	// "host:port" string, resolved as a TCP address.
	LocalAddr net.Addr `opt:"local_addr"`

	// LookupdPollInterval is how often a consumer polls nsqlookupd.
	// A Producer does not use it. Default 60s, range [10ms, 5m].
	LookupdPollInterval time.Duration `opt:"lookupd_poll_interval" min:"10ms" max:"5m" default:"60s"`
	// LookupdPollJitter is the fraction of LookupdPollInterval a consumer
	// adds as random jitter. A Producer does not use it. Default 0.3,
	// range [0, 1].
	LookupdPollJitter float64 `opt:"lookupd_poll_jitter" min:"0" max:"1" default:"0.3"`
	// LookupdPollTimeout is the timeout of a consumer's nsqlookupd query.
	// A Producer does not use it. Default 1m.
	LookupdPollTimeout time.Duration `opt:"lookupd_poll_timeout" default:"1m"`

	// MaxRequeueDelay is the longest delay a consumer requeues a message
	// with. A Producer does not use it. Default 15m, range [0, 60m].
	MaxRequeueDelay time.Duration `opt:"max_requeue_delay" min:"0" max:"60m" default:"15m"`
	// DefaultRequeueDelay is the base delay a consumer requeues a failed
	// message with. A Producer does not use it. Default 90s, range [0, 60m].
	DefaultRequeueDelay time.Duration `opt:"default_requeue_delay" min:"0" max:"60m" default:"90s"`

	// BackoffStrategy is how a consumer computes its backoff after failures.
	// A Producer does not use it. Option values: "exponential" (the default,
	// an [ExponentialStrategy]) and "full_jitter" (a [FullJitterStrategy]),
	// or any BackoffStrategy value.
	BackoffStrategy BackoffStrategy `opt:"backoff_strategy" default:"exponential"`
	// MaxBackoffDuration caps a consumer's backoff; 0 disables backoff.
	// A Producer does not use it. Default 2m, range [0, 60m].
	MaxBackoffDuration time.Duration `opt:"max_backoff_duration" min:"0" max:"60m" default:"2m"`
	// BackoffMultiplier is the unit of a consumer's backoff.
	// A Producer does not use it. Default 1s, range [0, 60m].
	BackoffMultiplier time.Duration `opt:"backoff_multiplier" min:"0" max:"60m" default:"1s"`

	// MaxAttempts is how many times a consumer tries a message before giving
	// up on it; 0 means no limit. A Producer does not use it. Default 5,
	// range [0, 65535].
	MaxAttempts uint16 `opt:"max_attempts" min:"0" max:"65535" default:"5"`

	// LowRdyIdleTimeout is how long a consumer waits for a message from an
	// nsqd before moving its RDY count elsewhere. A Producer does not use
	// it. Default 10s, range [1s, 5m].
	LowRdyIdleTimeout time.Duration `opt:"low_rdy_idle_timeout" min:"1s" max:"5m" default:"10s"`
	// LowRdyTimeout is how long a consumer waits before redistributing RDY
	// regardless of LowRdyIdleTimeout. A Producer does not use it.
	// Default 30s, range [1s, 5m].
	LowRdyTimeout time.Duration `opt:"low_rdy_timeout" min:"1s" max:"5m" default:"30s"`
	// RDYRedistributeInterval is how often a consumer redistributes
	// MaxInFlight across its connections. A Producer does not use it.
	// Default 5s, range [1ms, 5s].
	RDYRedistributeInterval time.Duration `opt:"rdy_redistribute_interval" min:"1ms" max:"5s" default:"5s"`

	// ClientID identifies this client to nsqd (IDENTIFY client_id).
	// Default: the short hostname, the part of os.Hostname before the
	// first '.'.
	ClientID string `opt:"client_id"`
	// Hostname is sent to nsqd in IDENTIFY. Default: os.Hostname.
	Hostname string `opt:"hostname"`
	// UserAgent is sent to nsqd in IDENTIFY, in the spirit of HTTP's
	// header. Default "nsqkit-go-nsq/" + [VERSION].
	UserAgent string `opt:"user_agent"`

	// HeartbeatInterval is how often nsqd sends a heartbeat (the Conn
	// answers each with NOP). It must be below ReadTimeout by at least a
	// tenth of ReadTimeout (and 100ms). -1 (or -1ms, as Set gives for the
	// number -1) disables heartbeats; 0 asks for nsqd's default, 30s. nsqd
	// refuses intervals below 1s other than those. Default 30s.
	HeartbeatInterval time.Duration `opt:"heartbeat_interval" default:"30s"`
	// SampleRate is the percentage of a channel's messages nsqd delivers to
	// this client; 0 means all. It is part of IDENTIFY and only affects
	// consuming. Default 0, range [0, 99].
	SampleRate int32 `opt:"sample_rate" min:"0" max:"99"`

	// TlsV1 asks nsqd to upgrade the connection to TLS (IDENTIFY tls_v1),
	// configured by TlsConfig. Default false.
	TlsV1 bool `opt:"tls_v1"`
	// TlsConfig is the TLS configuration used when TlsV1 is set; nil (the
	// default) means Go's defaults. Besides tls_config (a *tls.Config),
	// [Config.Set] accepts these set-only options, each of which creates
	// TlsConfig if it is nil and none of which sets TlsV1:
	//
	//	tls_root_ca_file         path of a PEM file of root CAs (replaces RootCAs)
	//	tls_insecure_skip_verify bool: do not verify nsqd's certificate
	//	tls_cert, tls_key        paths of a PEM certificate and key; loaded into
	//	                         Certificates once both are set
	//	tls_min_version          "ssl3.0", "tls1.0", "tls1.1", "tls1.2" or "tls1.3"
	TlsConfig *tls.Config `opt:"tls_config"`

	// Deflate asks nsqd to compress the connection with deflate. It cannot
	// be combined with Snappy. Default false.
	Deflate bool `opt:"deflate"`
	// DeflateLevel is the deflate compression level. Default 6, range [1, 9].
	DeflateLevel int `opt:"deflate_level" min:"1" max:"9" default:"6"`
	// Snappy asks nsqd to compress the connection with snappy. It cannot be
	// combined with Deflate. Default false.
	Snappy bool `opt:"snappy"`

	// OutputBufferSize is the size in bytes of the buffer nsqd uses for
	// writes to this client; -1 disables buffering. Default 16384.
	OutputBufferSize int64 `opt:"output_buffer_size" default:"16384"`
	// OutputBufferTimeout is how long nsqd may buffer writes to this client
	// before flushing; -1 disables buffering. Very low values (< 25ms) cost
	// nsqd significant CPU. Default 250ms.
	OutputBufferTimeout time.Duration `opt:"output_buffer_timeout" default:"250ms"`

	// MaxInFlight is how many messages a consumer allows in flight.
	// A Producer does not use it. Default 1, minimum 0.
	MaxInFlight int `opt:"max_in_flight" min:"0" default:"1"`

	// MsgTimeout is the server-side timeout of messages delivered to this
	// client; 0 means nsqd's default. It is part of IDENTIFY and only
	// affects consuming. Default 0, minimum 0.
	MsgTimeout time.Duration `opt:"msg_timeout" min:"0"`

	// AuthSecret is sent to nsqd with AUTH when nsqd requires
	// authentication. Default "".
	AuthSecret string `opt:"auth_secret"`
	// LookupdAuthorization makes a consumer, or a ProducerPool polling
	// nsqlookupd, send AuthSecret as a bearer token to nsqlookupd. A
	// Producer does not use it. Option name
	// "skip_lookupd_authorization" (as in go-nsq). Default true.
	LookupdAuthorization bool `opt:"skip_lookupd_authorization" default:"true"`

	// MaxMsgSize is the largest body in bytes a PUB or DPUB, or a single
	// message of an MPUB, may have; larger ones are refused at the call,
	// before they reach the connection. Set it to nsqd's --max-msg-size.
	// Default 0 (no client-side limit), minimum 0.
	MaxMsgSize int64 `opt:"max_msg_size" min:"0" default:"0"`
	// MaxBodySize is the largest MPUB body in bytes (4-byte message count,
	// plus a 4-byte size and the body of each message) accepted at the
	// call. Set it to nsqd's --max-body-size. Default 0 (no client-side
	// limit), minimum 0.
	MaxBodySize int64 `opt:"max_body_size" min:"0" default:"0"`
	// MaxDeferredDelay is the longest delay DeferredPublish accepts; longer
	// ones are refused at the call. Default 1h (nsqd's --max-req-timeout
	// default), minimum 0.
	MaxDeferredDelay time.Duration `opt:"max_deferred_delay" min:"0" default:"1h"`
	// MaxFrameSize is the largest frame in bytes accepted from nsqd; a
	// larger announced size tears the connection down without allocating
	// it. Default 32 MiB (33554432), minimum 1024.
	MaxFrameSize int64 `opt:"max_frame_size" min:"1024" default:"33554432"`
	// StopTimeout is how long Stop waits for nsqd's answers to publishes it
	// already accepted before failing them. Default 5s, minimum 0.
	StopTimeout time.Duration `opt:"stop_timeout" min:"0" default:"5s"`
	// ReconnectBackoff is the base of the exponential backoff, with jitter,
	// between consecutive failed connection attempts. Default 50ms,
	// minimum 0.
	ReconnectBackoff time.Duration `opt:"reconnect_backoff" min:"0" default:"50ms"`
	// MaxReconnectBackoff caps the backoff between failed connection
	// attempts. It must not be less than ReconnectBackoff. Default 1s,
	// minimum 0.
	MaxReconnectBackoff time.Duration `opt:"max_reconnect_backoff" min:"0" default:"1s"`
	// AutoBatch sends the publishes to one topic that are queued together
	// (PUBs, and the messages of MultiPublishes, in order) as one MPUB:
	// nsqd answers one command instead of one per publish. Each publish
	// still completes with its own result. Default true.
	AutoBatch bool `opt:"auto_batch" default:"true"`
	// MaxBatchMessages is the most messages AutoBatch puts in one MPUB (a
	// MultiPublish of more is sent as it is).
	// Default 512, range [1, 100000].
	MaxBatchMessages int `opt:"max_batch_messages" min:"1" max:"100000" default:"512"`
	// MaxBatchBytes is the most message bytes AutoBatch puts in one MPUB.
	// Default 1 MiB (1048576), range [1024, 5242880].
	MaxBatchBytes int `opt:"max_batch_bytes" min:"1024" max:"5242880" default:"1048576"`
	// MaxPending is the most publishes accepted but not yet completed; a
	// publish beyond it waits until one completes (backpressure).
	// Default 65536, minimum 1.
	MaxPending int `opt:"max_pending" min:"1" default:"65536"`
	// MaxPendingBytes is the most message bytes accepted but not yet
	// completed; a publish beyond it waits until enough complete
	// (backpressure). Default 256 MiB (268435456), minimum 1.
	MaxPendingBytes int64 `opt:"max_pending_bytes" min:"1" default:"268435456"`
	// PoolMaxAttempts is how many nodes a [ProducerPool] hands one publish
	// to, at most: a publish that never reached a node (ErrNeverSent) goes
	// to another until this many have failed to take it. A Producer does
	// not use it. Default 3, range [1, 100].
	PoolMaxAttempts int `opt:"pool_max_attempts" min:"1" max:"100" default:"3"`
}

// NewConfig returns a Config with every option at its default. It is the
// only valid way to create a Config.
func NewConfig() *Config {
	c := &Config{initialized: true}
	for _, o := range configOptions.list {
		if !o.hasDefault {
			continue
		}
		if err := o.set(c, o.def); err != nil {
			panic(fmt.Sprintf("nsq: bad default for option %s: %v", o.name, err))
		}
	}
	hostname, err := os.Hostname()
	if err == nil {
		c.Hostname = hostname
		c.ClientID, _, _ = strings.Cut(hostname, ".")
	}
	c.UserAgent = "nsqkit-go-nsq/" + VERSION
	return c
}

// Set sets the option named option ('-' and '_' are interchangeable) to
// value, coerced to the field's type as go-nsq v1.1.0 coerces it. The
// integer kinds below are int, int16, int32, int64, uint, uint16, uint32
// and uint64, by exact type (not int8, uint8 or a named type):
//
//   - durations: a string for time.ParseDuration ("1000ms", "1s"), a
//     time.Duration, or an integer number of milliseconds;
//   - bools: a bool, a string for strconv.ParseBool ("true", "false", "1"),
//     or an integer (non-zero is true);
//   - integers: a base-10 string or an integer;
//   - floats: a string for strconv.ParseFloat, an integer, a float32 or a
//     float64;
//   - strings: any value: a string as it is, an integer in base 10, a float
//     with six decimals ("1.500000"), anything else as fmt's %s formats it
//     ([]byte("s3cret") as "s3cret", time.Second as "1s");
//   - local_addr: a net.Addr, a "host:port" string for net.ResolveTCPAddr,
//     or nil;
//   - backoff_strategy: "exponential", "full_jitter" or a BackoffStrategy;
//   - tls_config: a *tls.Config or nil.
//
// Where go-nsq would silently wrap a value (a negative integer for an
// unsigned option, a number beyond the field's type or beyond
// time.Duration) or store NaN, Set returns an error; where go-nsq panics
// (nil for local_addr or tls_config, an unknown backoff strategy, a
// non-string path for tls_cert), Set sets nil or returns an error.
//
// The TLS options listed on Config.TlsV1 are also accepted. Set enforces
// the option's min and max and leaves the Config unchanged on error. The
// checks between options (for example Snappy with Deflate) are left to
// [Config.Validate].
func (c *Config) Set(option string, value any) error {
	c.assertInitialized()
	name := strings.ReplaceAll(option, "-", "_")
	if o, ok := configOptions.byName[name]; ok {
		return o.set(c, value)
	}
	if isTLSOption(name) {
		return c.setTLSOption(name, value)
	}
	return fmt.Errorf("nsq: unknown option %q", option)
}

// Validate reports the first option outside its min/max, or a combination
// nsqd or this library cannot work with: Snappy with Deflate,
// MaxReconnectBackoff below ReconnectBackoff, or a HeartbeatInterval that
// cannot keep an idle connection alive: not below ReadTimeout by at least a
// tenth of ReadTimeout (100ms at least), 0 (nsqd's default, 30s) when that
// is not, a fraction of a millisecond, or a negative value other than -1ms
// or -1ns (which disable heartbeats). Errors name the option.
func (c *Config) Validate() error {
	c.assertInitialized()
	v := reflect.ValueOf(c).Elem()
	for _, o := range configOptions.list {
		if err := o.checkBounds(v.Field(o.index)); err != nil {
			return err
		}
	}
	if c.Snappy && c.Deflate {
		return errors.New("nsq: invalid options snappy and deflate: both are enabled but nsqd accepts only one compression")
	}
	if c.MaxReconnectBackoff < c.ReconnectBackoff {
		return fmt.Errorf("nsq: invalid option max_reconnect_backoff: %v is below reconnect_backoff %v",
			c.MaxReconnectBackoff, c.ReconnectBackoff)
	}
	return c.validateHeartbeat()
}

// nsqdDefaultHeartbeat is the interval nsqd uses when IDENTIFY asks for 0:
// half its client timeout, which is 60s.
const nsqdDefaultHeartbeat = 30 * time.Second

// heartbeatMargin is how much shorter than read_timeout the heartbeat
// interval must be, so that a heartbeat a little late does not end an idle
// connection: a tenth of read_timeout, at least 100ms.
func heartbeatMargin(readTimeout time.Duration) time.Duration {
	return max(readTimeout/10, 100*time.Millisecond)
}

// validateHeartbeat refuses the heartbeat intervals that cannot keep an
// idle connection alive under read_timeout, and those nsqd would refuse or
// misread because IDENTIFY carries whole milliseconds. Intervals from 1ms
// to 999ms are left to nsqd, which refuses them with ErrIdentify, as with
// go-nsq.
func (c *Config) validateHeartbeat() error {
	hb, ms := c.HeartbeatInterval, identifyMillis(c.HeartbeatInterval)
	switch {
	case ms == -1:
		return nil // no heartbeats
	case ms < -1:
		return fmt.Errorf("nsq: invalid option heartbeat_interval: %v; nsqd accepts -1 (no heartbeats), 0 (its default, %v) or 1s up to its --max-heartbeat-interval", hb, nsqdDefaultHeartbeat)
	case ms == 0 && hb != 0:
		return fmt.Errorf("nsq: invalid option heartbeat_interval: %v is not a whole number of milliseconds above zero; IDENTIFY would carry 0, which nsqd reads as its default (%v)", hb, nsqdDefaultHeartbeat)
	case ms == 0:
		hb = nsqdDefaultHeartbeat
	}
	if margin := heartbeatMargin(c.ReadTimeout); hb > c.ReadTimeout-margin {
		return fmt.Errorf("nsq: invalid option heartbeat_interval: %v must be below read_timeout %v by at least %v, or an idle connection times out between two heartbeats; set heartbeat_interval to -1 to disable heartbeats (an idle connection then has no read deadline)",
			c.HeartbeatInterval, c.ReadTimeout, margin)
	}
	return nil
}

func (c *Config) assertInitialized() {
	if c == nil || !c.initialized {
		panic("nsq: Config must be created with NewConfig()")
	}
}

// ConfigFlag makes a Config settable from the command line: it implements
// flag.Value, each use of the flag calling [Config.Set].
//
//	cfg := nsq.NewConfig()
//	flag.Var(&nsq.ConfigFlag{Config: cfg}, "producer-opt", "option,value (may be repeated)")
type ConfigFlag struct {
	Config *Config
}

// Set parses "option,value" (the value may itself contain commas) and sets
// that option; a bare "option" sets it to true.
func (c *ConfigFlag) Set(opt string) error {
	name, value, ok := strings.Cut(opt, ",")
	if !ok {
		return c.Config.Set(name, true)
	}
	return c.Config.Set(name, value)
}

// String returns "", as go-nsq's does: a ConfigFlag has no single value to
// show.
func (c *ConfigFlag) String() string {
	return ""
}

// configOption is one Config field settable by name, built from its
// struct tags.
type configOption struct {
	name  string // the opt tag
	field string // the Go field name
	index int    // index of the field in Config
	typ   reflect.Type

	def        string // the default tag; applied when hasDefault
	hasDefault bool
	min, max   reflect.Value // of typ; invalid when there is no bound
}

// configOptions indexes Config's options, in field order and by name.
var configOptions = buildConfigOptions()

type optionTable struct {
	list   []*configOption
	byName map[string]*configOption
}

func buildConfigOptions() optionTable {
	t := optionTable{byName: map[string]*configOption{}}
	typ := reflect.TypeFor[Config]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, ok := f.Tag.Lookup("opt")
		if !ok {
			continue
		}
		if _, dup := t.byName[name]; dup || isTLSOption(name) {
			panic("nsq: duplicate Config option " + name)
		}
		o := &configOption{name: name, field: f.Name, index: i, typ: f.Type}
		o.def, o.hasDefault = f.Tag.Lookup("default")
		o.min = parseBoundTag(f, "min")
		o.max = parseBoundTag(f, "max")
		t.list = append(t.list, o)
		t.byName[name] = o
	}
	return t
}

// parseBoundTag returns the value of f's min or max tag, or an invalid
// Value when f has none.
func parseBoundTag(f reflect.StructField, tag string) reflect.Value {
	s, ok := f.Tag.Lookup(tag)
	if !ok {
		return reflect.Value{}
	}
	v, err := coerce(s, f.Type)
	if err != nil {
		panic(fmt.Sprintf("nsq: bad %s tag on Config.%s: %v", tag, f.Name, err))
	}
	return v
}

// set coerces value, checks it against the bounds and stores it in c.
func (o *configOption) set(c *Config, value any) error {
	v, err := coerce(value, o.typ)
	if err != nil {
		return fmt.Errorf("nsq: cannot set option %s to %#v: %w", o.name, value, err)
	}
	if err := o.checkBounds(v); err != nil {
		return err
	}
	if s, ok := v.Interface().(interface{ setConfig(*Config) }); ok {
		s.setConfig(c)
	}
	reflect.ValueOf(c).Elem().Field(o.index).Set(v)
	return nil
}

// checkBounds reports whether v (of o.typ) is outside o's min or max.
func (o *configOption) checkBounds(v reflect.Value) error {
	if o.min.IsValid() && compareNumbers(v, o.min) < 0 {
		return fmt.Errorf("nsq: invalid option %s (Config.%s): %v is below the minimum %v",
			o.name, o.field, v.Interface(), o.min.Interface())
	}
	if o.max.IsValid() && compareNumbers(v, o.max) > 0 {
		return fmt.Errorf("nsq: invalid option %s (Config.%s): %v is above the maximum %v",
			o.name, o.field, v.Interface(), o.max.Interface())
	}
	return nil
}

// compareNumbers returns -1, 0 or 1 as a is less than, equal to or greater
// than b, two numbers of the same type.
func compareNumbers(a, b reflect.Value) int {
	switch {
	case a.CanInt():
		return cmp.Compare(a.Int(), b.Int())
	case a.CanUint():
		return cmp.Compare(a.Uint(), b.Uint())
	case a.CanFloat():
		return cmp.Compare(a.Float(), b.Float())
	}
	panic("nsq: min/max on non-numeric option type " + a.Type().String())
}

var (
	durationType        = reflect.TypeFor[time.Duration]()
	addrType            = reflect.TypeFor[net.Addr]()
	backoffStrategyType = reflect.TypeFor[BackoffStrategy]()
	tlsConfigType       = reflect.TypeFor[*tls.Config]()
)

// coerce converts value to typ, following the rules documented on
// Config.Set.
func coerce(value any, typ reflect.Type) (reflect.Value, error) {
	switch typ {
	case durationType:
		d, err := coerceDuration(value)
		return reflect.ValueOf(d), err
	case addrType:
		return coerceAddr(value)
	case backoffStrategyType:
		return coerceBackoffStrategy(value)
	case tlsConfigType:
		if value == nil {
			return reflect.Zero(typ), nil
		}
		if tc, ok := value.(*tls.Config); ok {
			return reflect.ValueOf(tc), nil
		}
		return reflect.Value{}, fmt.Errorf("want a *tls.Config, got %T", value)
	}

	out := reflect.New(typ).Elem()
	switch typ.Kind() {
	case reflect.String:
		out.SetString(coerceString(value))
	case reflect.Bool:
		b, err := coerceBool(value)
		if err != nil {
			return reflect.Value{}, err
		}
		out.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := coerceInt64(value)
		if err != nil {
			return reflect.Value{}, err
		}
		if out.OverflowInt(n) {
			return reflect.Value{}, fmt.Errorf("%d overflows %s", n, typ)
		}
		out.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := coerceUint64(value)
		if err != nil {
			return reflect.Value{}, err
		}
		if out.OverflowUint(n) {
			return reflect.Value{}, fmt.Errorf("%d overflows %s", n, typ)
		}
		out.SetUint(n)
	case reflect.Float32, reflect.Float64:
		f, err := coerceFloat64(value)
		if err != nil {
			return reflect.Value{}, err
		}
		if out.OverflowFloat(f) {
			return reflect.Value{}, fmt.Errorf("%v overflows %s", f, typ)
		}
		out.SetFloat(f)
	default:
		return reflect.Value{}, fmt.Errorf("unsupported option type %s", typ)
	}
	return out, nil
}

func errValueType(value any, want string) error {
	return fmt.Errorf("want %s, got %T", want, value)
}

// The coercions below are go-nsq v1.1.0's: a value is recognised by its
// exact type, so int8, uint8 and named types (time.Duration aside) are none
// of the integer kinds. Where go-nsq silently wraps a value (an int64 number
// of milliseconds beyond time.Duration, -1 for max_attempts, a value beyond
// the field's type) or accepts NaN, Set refuses it instead.

// signed returns value as an int64 when its type is int, int16, int32 or
// int64.
func signed(value any) (int64, bool) {
	switch v := value.(type) {
	case int:
		return int64(v), true
	case int16:
		return int64(v), true
	case int32:
		return int64(v), true
	case int64:
		return v, true
	}
	return 0, false
}

// unsigned returns value as a uint64 when its type is uint, uint16, uint32
// or uint64.
func unsigned(value any) (uint64, bool) {
	switch v := value.(type) {
	case uint:
		return uint64(v), true
	case uint16:
		return uint64(v), true
	case uint32:
		return uint64(v), true
	case uint64:
		return v, true
	}
	return 0, false
}

// coerceDuration accepts a string for time.ParseDuration, a time.Duration,
// or a number of milliseconds of type int, int16, int32, int64, uint,
// uint16, uint32 or uint64.
func coerceDuration(value any) (time.Duration, error) {
	switch v := value.(type) {
	case string:
		return time.ParseDuration(v)
	case time.Duration:
		return v, nil
	}
	if ms, ok := signed(value); ok {
		if ms > math.MaxInt64/int64(time.Millisecond) || ms < math.MinInt64/int64(time.Millisecond) {
			return 0, fmt.Errorf("%dms overflows time.Duration", ms)
		}
		return time.Duration(ms) * time.Millisecond, nil
	}
	if ms, ok := unsigned(value); ok {
		if ms > math.MaxInt64/uint64(time.Millisecond) {
			return 0, fmt.Errorf("%dms overflows time.Duration", ms)
		}
		return time.Duration(ms) * time.Millisecond, nil
	}
	return 0, errValueType(value, "a duration string, a time.Duration or an integer number of milliseconds")
}

// coerceBool accepts a bool, a string for strconv.ParseBool, or an integer
// (non-zero is true).
func coerceBool(value any) (bool, error) {
	switch v := value.(type) {
	case bool:
		return v, nil
	case string:
		return strconv.ParseBool(v)
	}
	if n, ok := signed(value); ok {
		return n != 0, nil
	}
	if n, ok := unsigned(value); ok {
		return n != 0, nil
	}
	return false, errValueType(value, "a bool, a bool string or an integer")
}

// coerceInt64 accepts a base-10 string or an integer.
func coerceInt64(value any) (int64, error) {
	if s, ok := value.(string); ok {
		return strconv.ParseInt(s, 10, 64)
	}
	if n, ok := signed(value); ok {
		return n, nil
	}
	if n, ok := unsigned(value); ok {
		if n > math.MaxInt64 {
			return 0, fmt.Errorf("%d overflows int64", n)
		}
		return int64(n), nil
	}
	return 0, errValueType(value, "an integer or an integer string")
}

// coerceUint64 accepts a base-10 string or a non-negative integer.
func coerceUint64(value any) (uint64, error) {
	if s, ok := value.(string); ok {
		return strconv.ParseUint(s, 10, 64)
	}
	if n, ok := signed(value); ok {
		if n < 0 {
			return 0, fmt.Errorf("%d is negative", n)
		}
		return uint64(n), nil
	}
	if n, ok := unsigned(value); ok {
		return n, nil
	}
	return 0, errValueType(value, "a non-negative integer or integer string")
}

// coerceFloat64 accepts a string for strconv.ParseFloat, an integer, a
// float32 or a float64; not NaN.
func coerceFloat64(value any) (float64, error) {
	var f float64
	switch v := value.(type) {
	case string:
		var err error
		if f, err = strconv.ParseFloat(v, 64); err != nil {
			return 0, err
		}
	case float32:
		f = float64(v)
	case float64:
		f = v
	default:
		if n, ok := signed(value); ok {
			f = float64(n)
		} else if n, ok := unsigned(value); ok {
			f = float64(n)
		} else {
			return 0, errValueType(value, "a number or a number string")
		}
	}
	if math.IsNaN(f) {
		return 0, errors.New("NaN is not a valid value")
	}
	return f, nil
}

// coerceString formats any value: a string as it is, an integer in base 10,
// a float32 or float64 with six decimals ("1.500000"), anything else with
// fmt's %s verb (a []byte as its text, a fmt.Stringer through String,
// time.Duration as "1s"), as go-nsq does.
func coerceString(value any) string {
	switch v := value.(type) {
	case string:
		return v
	case float32, float64:
		return fmt.Sprintf("%f", v)
	}
	if n, ok := signed(value); ok {
		return strconv.FormatInt(n, 10)
	}
	if n, ok := unsigned(value); ok {
		return strconv.FormatUint(n, 10)
	}
	return fmt.Sprintf("%s", value)
}

// coerceAddr accepts a net.Addr, a "host:port" string resolved as TCP, or
// nil (no local address).
func coerceAddr(value any) (reflect.Value, error) {
	var addr net.Addr
	switch v := value.(type) {
	case nil:
	case string:
		tcpAddr, err := net.ResolveTCPAddr("tcp", v)
		if err != nil {
			return reflect.Value{}, err
		}
		addr = tcpAddr
	case net.Addr:
		addr = v
	default:
		return reflect.Value{}, errValueType(value, `a net.Addr or a "host:port" string`)
	}
	out := reflect.New(addrType).Elem()
	if addr != nil {
		out.Set(reflect.ValueOf(addr))
	}
	return out, nil
}

// coerceBackoffStrategy accepts "exponential" (or ""), "full_jitter", or a
// BackoffStrategy value. A string always yields a new strategy.
func coerceBackoffStrategy(value any) (reflect.Value, error) {
	var s BackoffStrategy
	switch v := value.(type) {
	case string:
		switch v {
		case "", "exponential":
			s = &ExponentialStrategy{}
		case "full_jitter":
			s = &FullJitterStrategy{}
		default:
			return reflect.Value{}, fmt.Errorf(`unknown backoff strategy %q (want "exponential" or "full_jitter")`, v)
		}
	case BackoffStrategy:
		s = v
	default:
		return reflect.Value{}, errValueType(value, `"exponential", "full_jitter" or a BackoffStrategy`)
	}
	out := reflect.New(backoffStrategyType).Elem()
	out.Set(reflect.ValueOf(s))
	return out, nil
}

// The set-only TLS options; see Config.TlsV1.
func isTLSOption(name string) bool {
	switch name {
	case "tls_root_ca_file", "tls_insecure_skip_verify", "tls_cert", "tls_key", "tls_min_version":
		return true
	}
	return false
}

var tlsVersions = map[string]uint16{
	"ssl3.0": tls.VersionSSL30, //nolint:staticcheck // accepted for go-nsq compatibility; Go refuses to negotiate it
	"tls1.0": tls.VersionTLS10,
	"tls1.1": tls.VersionTLS11,
	"tls1.2": tls.VersionTLS12,
	"tls1.3": tls.VersionTLS13,
}

// setTLSOption applies one of the set-only TLS options, creating
// c.TlsConfig if it is nil. On error c is unchanged.
func (c *Config) setTLSOption(name string, value any) error {
	tc := c.TlsConfig
	if tc == nil {
		tc = &tls.Config{}
	}
	if err := c.applyTLSOption(tc, name, value); err != nil {
		return err
	}
	c.TlsConfig = tc
	return nil
}

func (c *Config) applyTLSOption(tc *tls.Config, name string, value any) error {
	switch name {
	case "tls_root_ca_file":
		path, ok := value.(string)
		if !ok {
			return fmt.Errorf("nsq: cannot set option %s: %v", name, errValueType(value, "a file path"))
		}
		pem, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("nsq: cannot set option %s: %w", name, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("nsq: cannot set option %s: no PEM certificate found in %s", name, path)
		}
		tc.RootCAs = pool
	case "tls_insecure_skip_verify":
		b, err := coerceBool(value)
		if err != nil {
			return fmt.Errorf("nsq: cannot set option %s to %#v: %w", name, value, err)
		}
		tc.InsecureSkipVerify = b
	case "tls_cert", "tls_key":
		path, ok := value.(string)
		if !ok {
			return fmt.Errorf("nsq: cannot set option %s: %v", name, errValueType(value, "a file path"))
		}
		certFile, keyFile := c.tlsCertFile, c.tlsKeyFile
		if name == "tls_cert" {
			certFile = path
		} else {
			keyFile = path
		}
		if certFile != "" && keyFile != "" {
			cert, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				return fmt.Errorf("nsq: cannot set option %s: %w", name, err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		c.tlsCertFile, c.tlsKeyFile = certFile, keyFile
	case "tls_min_version":
		s, ok := value.(string)
		if !ok {
			return fmt.Errorf("nsq: cannot set option %s: %v", name, errValueType(value, `a version string such as "tls1.2"`))
		}
		v, ok := tlsVersions[s]
		if !ok {
			return fmt.Errorf(`nsq: cannot set option %s: unknown TLS version %q (want "ssl3.0", "tls1.0", "tls1.1", "tls1.2" or "tls1.3")`, name, s)
		}
		tc.MinVersion = v
	}
	return nil
}
