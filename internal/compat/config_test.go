package compat

import (
	"crypto/tls"
	"fmt"
	"math"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	gonsq "github.com/nsqio/go-nsq"
	nsq "github.com/nsqkit/go-nsq"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// setOutcome is what Config.Set did with one option and value.
type setOutcome struct {
	panicked bool
	err      error
	field    string // the option's field after Set, formatted; "" on error or panic
}

func (o setOutcome) String() string {
	switch {
	case o.panicked:
		return "panic"
	case o.err != nil:
		return "error: " + o.err.Error()
	}
	return "set to " + o.field
}

// options returns every option name go-nsq's Config.Set accepts: the opt
// tags of its Config, and the TLS options.
func options() []string {
	var opts []string
	typ := reflect.TypeFor[gonsq.Config]()
	for i := range typ.NumField() {
		if opt := typ.Field(i).Tag.Get("opt"); opt != "" {
			opts = append(opts, opt)
		}
	}
	return append(opts, "tls_root_ca_file", "tls_insecure_skip_verify", "tls_cert", "tls_key", "tls_min_version")
}

// fieldOf returns the name of the Config field an option sets, or "" for
// the TLS options.
func fieldOf(opt string) string {
	typ := reflect.TypeFor[gonsq.Config]()
	for i := range typ.NumField() {
		if typ.Field(i).Tag.Get("opt") == opt {
			return typ.Field(i).Name
		}
	}
	return ""
}

type namedInt int
type namedString string

// setValue is one value given to both libraries' Set; g and o differ only
// where each library needs its own type (a BackoffStrategy).
type setValue struct {
	name string
	g, o any
}

func same(name string, v any) setValue { return setValue{name, v, v} }

var sharedTLSConfig = &tls.Config{ServerName: "shared"}

// values covers every value kind: strings of every shape the options parse,
// every integer and float type (by exact type, as go-nsq's coercions
// match them), bools, durations, byte slices, nil, structs, named types,
// Stringers, addresses, TLS configs and strategies.
func values() []setValue {
	return []setValue{
		same(`""`, ""), same(`"0"`, "0"), same(`"1"`, "1"), same(`"-1"`, "-1"), same(`"5"`, "5"),
		same(`"0.5"`, "0.5"), same(`"1.5"`, "1.5"), same(`"NaN"`, "NaN"), same(`"true"`, "true"),
		same(`"false"`, "false"), same(`"1s"`, "1s"), same(`"250ms"`, "250ms"), same(`"-1s"`, "-1s"),
		same(`"exponential"`, "exponential"), same(`"full_jitter"`, "full_jitter"), same(`"linear"`, "linear"),
		same(`"127.0.0.1:4150"`, "127.0.0.1:4150"), same(`"tls1.0"`, "tls1.0"), same(`"tls1.2"`, "tls1.2"),
		same(`"tls1.3"`, "tls1.3"), same(`"ssl3.0"`, "ssl3.0"), same(`"nonsense"`, "nonsense"),
		same("int(0)", 0), same("int(1)", 1), same("int(5)", 5), same("int(-1)", -1), same("int(100)", 100),
		same("int(70000)", 70000), same("int8(5)", int8(5)), same("int16(5)", int16(5)), same("int32(5)", int32(5)),
		same("int64(5)", int64(5)), same("int64(1<<50)", int64(1)<<50), same("int64(MinInt64)", int64(math.MinInt64)),
		same("uint(5)", uint(5)), same("uint8(5)", uint8(5)), same("uint16(5)", uint16(5)), same("uint32(5)", uint32(5)),
		same("uint64(5)", uint64(5)), same("uint64(MaxUint64)", uint64(math.MaxUint64)),
		same("float32(0.5)", float32(0.5)), same("float64(0.5)", 0.5), same("float64(2)", 2.0), same("NaN", math.NaN()),
		same("true", true), same("false", false),
		same("time.Second", time.Second), same("time.Duration(0)", time.Duration(0)), same("-time.Millisecond", -time.Millisecond),
		same("[]byte", []byte("s3cret")), same("nil", nil), same("struct{}", struct{}{}), same("[]string", []string{"a"}),
		same("namedInt(5)", namedInt(5)), same("namedString", namedString("x")), same("net.IP (Stringer)", net.IPv4(10, 0, 0, 1)),
		same("*net.TCPAddr", &net.TCPAddr{IP: net.IPv4(1, 2, 3, 4), Port: 27015}),
		same("*tls.Config", sharedTLSConfig),
		{"*FullJitterStrategy", &gonsq.FullJitterStrategy{}, &nsq.FullJitterStrategy{}},
	}
}

// format returns a field's value in a form both libraries share.
func format(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case net.Addr:
		return "addr " + x.String()
	case *tls.Config:
		if x == sharedTLSConfig {
			return "the given *tls.Config"
		}
		return fmt.Sprintf("%p", x)
	case nil:
		return "nil"
	}
	if v.Kind() == reflect.Interface || v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return "nil"
		}
		return "a " + reflect.Indirect(v.Elem()).Type().Name() // *nsq.ExponentialStrategy in both
	}
	return fmt.Sprintf("%T(%v)", v.Interface(), v.Interface())
}

// formatTLS returns what a TLS option sets in a *tls.Config.
func formatTLS(opt string, tc *tls.Config) string {
	if tc == nil {
		return "no TlsConfig"
	}
	switch opt {
	case "tls_insecure_skip_verify":
		return fmt.Sprint("InsecureSkipVerify ", tc.InsecureSkipVerify)
	case "tls_min_version":
		return fmt.Sprintf("MinVersion %#x", tc.MinVersion)
	case "tls_root_ca_file":
		return fmt.Sprint("RootCAs ", tc.RootCAs != nil)
	}
	return fmt.Sprint("Certificates ", len(tc.Certificates))
}

func setGoNSQ(opt string, value any) (out setOutcome) {
	c := gonsq.NewConfig()
	defer func() {
		if recover() != nil {
			out = setOutcome{panicked: true}
		}
	}()
	if err := c.Set(opt, value); err != nil {
		return setOutcome{err: err}
	}
	if f := fieldOf(opt); f != "" {
		return setOutcome{field: format(reflect.ValueOf(c).Elem().FieldByName(f))}
	}
	return setOutcome{field: formatTLS(opt, c.TlsConfig)}
}

func setOurs(t *testing.T, opt string, value any) setOutcome {
	c := nsq.NewConfig()
	var err error
	require.NotPanics(t, func() { err = c.Set(opt, value) }, "Set(%q, %#v)", opt, value)
	if err != nil {
		return setOutcome{err: err}
	}
	if f := fieldOf(opt); f != "" {
		return setOutcome{field: format(reflect.ValueOf(c).Elem().FieldByName(f))}
	}
	return setOutcome{field: formatTLS(opt, c.TlsConfig)}
}

// deliberate says why our Set answers otherwise than go-nsq's, or "" when
// it must answer the same. Each reason is in the README's table.
func deliberate(opt string, g, o setOutcome) string {
	switch {
	case g.panicked:
		return "go-nsq panics; Set returns an error or sets nil"
	case opt == "tls_min_version" && g.err != nil && o.field == "MinVersion 0x304":
		return "tls1.3 accepted"
	case g.err == nil && o.err != nil && (strings.Contains(o.err.Error(), "overflows") || strings.Contains(o.err.Error(), "is negative")):
		return "go-nsq wraps the value around; Set refuses it"
	case g.err == nil && o.err != nil && strings.Contains(o.err.Error(), "NaN"):
		return "go-nsq stores NaN; Set refuses it"
	}
	return ""
}

// TestSetCoercions gives every option every kind of value, with go-nsq
// v1.1.0 and with this library, and compares: an error in both, or the
// same value set; the differences are the deliberate ones.
func TestSetCoercions(t *testing.T) {
	reasons := map[string]int{}
	compared := 0
	for _, opt := range options() {
		for _, v := range values() {
			g := setGoNSQ(opt, v.g)
			o := setOurs(t, opt, v.o)
			compared++
			if why := deliberate(opt, g, o); why != "" {
				reasons[why]++
				continue
			}
			require.Equal(t, g.err != nil, o.err != nil, "Set(%q, %s): go-nsq %v, ours %v", opt, v.name, g, o)
			if strings.HasPrefix(g.field, "string(&{") && v.name == "*FullJitterStrategy" {
				// %s of each library's own strategy struct: its fields.
				require.True(t, strings.HasPrefix(o.field, "string(&{"), "Set(%q, %s): %v", opt, v.name, o)
				continue
			}
			require.Equal(t, g.field, o.field, "Set(%q, %s)", opt, v.name)
		}
	}
	t.Logf("%d option × value pairs compared; deliberate differences: %v", compared, reasons)
	assert.Equal(t, 1, reasons["tls1.3 accepted"])
	assert.NotZero(t, reasons["go-nsq wraps the value around; Set refuses it"])
	assert.NotZero(t, reasons["go-nsq panics; Set returns an error or sets nil"])
	assert.Len(t, reasons, 4, "no difference but the deliberate ones")
}

// The values go-nsq wraps around, and what it makes of them; Set refuses
// them.
func TestSetWrapAround(t *testing.T) {
	for _, tc := range []struct {
		opt   string
		value any
		gonsq string
	}{
		{"max_attempts", -1, "uint16(65535)"},
		{"max_attempts", 70000, "uint16(4464)"},
		{"sample_rate", int64(1) << 32, "int32(0)"},
		{"output_buffer_size", uint64(math.MaxUint64), "int64(-1)"},
		{"dial_timeout", int64(1) << 50, "time.Duration(" + wrappedMillis(1<<50).String() + ")"},
	} {
		assert.Equal(t, setOutcome{field: tc.gonsq}, setGoNSQ(tc.opt, tc.value), "go-nsq Set(%q, %#v)", tc.opt, tc.value)
		assert.Error(t, setOurs(t, tc.opt, tc.value).err, "our Set(%q, %#v)", tc.opt, tc.value)
	}
}

// wrappedMillis is ms milliseconds as int64 arithmetic wraps it.
func wrappedMillis(ms int64) time.Duration {
	d := time.Duration(ms)
	return d * time.Millisecond
}

// The defaults of every option go-nsq has are go-nsq's, but user_agent.
func TestNewConfigDefaults(t *testing.T) {
	g, o := reflect.ValueOf(gonsq.NewConfig()).Elem(), reflect.ValueOf(nsq.NewConfig()).Elem()
	for _, opt := range options() {
		f := fieldOf(opt)
		if f == "" || f == "UserAgent" {
			continue
		}
		assert.Equal(t, format(g.FieldByName(f)), format(o.FieldByName(f)), "default of %s", opt)
	}
	assert.NoError(t, gonsq.NewConfig().Validate())
	assert.NoError(t, nsq.NewConfig().Validate())
}
