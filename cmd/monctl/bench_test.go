package main

import (
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/minimon/minimon/client/clienttest"
)

func benchJSON(t *testing.T, r result) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(r.out), &m); err != nil {
		t.Fatalf("bench output is not JSON: %v: %+v", err, r)
	}
	for _, k := range []string{"ops", "ops_per_sec", "errors", "p50_ms", "p90_ms", "p99_ms", "max_ms",
		"clients", "duration_s", "value_size", "keys"} {
		if _, ok := m[k].(float64); !ok {
			t.Errorf("field %q missing or not a number: %s", k, r.out)
		}
	}
	return m
}

func calls(s *clienttest.Server, method string) int {
	n := 0
	for _, c := range s.Calls() {
		if c.Method == method {
			n++
		}
	}
	return n
}

func TestBenchWriteAndRead(t *testing.T) {
	s := clienttest.New()
	addr := s.Start(t)

	r := monctl(t, addr, "-f", "json", "bench", "write", "--clients", "4", "--duration", "300ms", "--value-size", "64", "--keys", "50")
	if r.code != 0 {
		t.Fatalf("bench write: %+v", r)
	}
	m := benchJSON(t, r)
	ops := m["ops"].(float64)
	if ops <= 0 || m["errors"].(float64) != 0 || m["clients"].(float64) != 4 || m["value_size"].(float64) != 64 || m["keys"].(float64) != 50 {
		t.Errorf("bench write report: %s", r.out)
	}
	if d := m["duration_s"].(float64); d < 0.3 {
		t.Errorf("duration_s %v below --duration", d)
	}
	if !(m["p50_ms"].(float64) <= m["p90_ms"].(float64) && m["p90_ms"].(float64) <= m["p99_ms"].(float64) && m["p99_ms"].(float64) <= m["max_ms"].(float64)) || m["max_ms"].(float64) <= 0 {
		t.Errorf("percentiles out of order: %s", r.out)
	}
	// Every reported write reached the fake, with values of the asked size, under k0..k49.
	if got := s.Applied(); got < int(ops) {
		t.Errorf("fake applied %d writes, report says %v", got, ops)
	}
	st := runCtx(t.Context(), "", "-m", addr, "-f", "json", "config-key", "ls")
	var keys []string
	if err := json.Unmarshal([]byte(st.out), &keys); err != nil || len(keys) == 0 || len(keys) > 50 {
		t.Errorf("keys after bench write: %v %q", err, st.out)
	}
	v := monctl(t, addr, "config-key", "get", keys[0])
	if len(v.out) != 64 {
		t.Errorf("value of %s is %d bytes, want 64", keys[0], len(v.out))
	}

	before := calls(s, "KVGet")
	r = monctl(t, addr, "bench", "read", "--clients", "4", "--duration", "300ms", "--keys", "20")
	if r.code != 0 {
		t.Fatalf("bench read: %+v", r)
	}
	for _, want := range []string{"bench read: 4 clients", "errors 0", "latency p50 "} {
		if !strings.Contains(r.out, want) {
			t.Errorf("plain bench read lacks %q: %s", want, r.out)
		}
	}
	if calls(s, "KVGet") == before {
		t.Errorf("bench read sent no KVGet")
	}
	// Reads found their keys: no NotFound (errors 0 above) after a prefill of the 20 keys.
	if n := calls(s, "KVSet"); n < 20 {
		t.Errorf("prefill wrote %d keys, want at least 20", n)
	}
}

func TestBenchCountsErrors(t *testing.T) {
	s := clienttest.New()
	var n atomic.Int64
	s.Intercept = func(method string, _ proto.Message) error {
		if method == "KVSet" && n.Add(1)%3 == 0 {
			return status.Error(codes.Internal, "injected")
		}
		return nil
	}
	addr := s.Start(t)
	r := monctl(t, addr, "-f", "json", "bench", "write", "--clients", "4", "--duration", "300ms")
	if r.code != 0 {
		t.Fatalf("bench with some failures must succeed: %+v", r)
	}
	m := benchJSON(t, r)
	ops, errs := m["ops"].(float64), m["errors"].(float64)
	if ops <= 0 || errs <= 0 {
		t.Fatalf("want ops and errors both counted: %s", r.out)
	}
	// One call in three fails; the workers stop at slightly different calls.
	if total := ops + errs; errs < total/3-4 || errs > total/3+4 {
		t.Errorf("errors %v of %v, want about a third", errs, total)
	}
	if !strings.Contains(r.out, `"first_error":"injected"`) {
		t.Errorf("first error not reported: %s", r.out)
	}
}

func TestBenchAllFail(t *testing.T) {
	s := clienttest.New()
	s.Intercept = func(method string, _ proto.Message) error {
		if method == "KVGet" {
			return status.Error(codes.ResourceExhausted, "too big")
		}
		return nil
	}
	addr := s.Start(t)
	r := monctl(t, addr, "bench", "read", "--clients", "2", "--duration", "100ms")
	if r.code != exitEFBIG || !strings.Contains(r.errOut, "all") || !strings.Contains(r.out, "ops 0 ") {
		t.Errorf("all reads failing: want exit %d, the report and a message: %+v", exitEFBIG, r)
	}
}

func TestBenchSetupBoundedByTimeout(t *testing.T) {
	s := clienttest.New()
	s.Intercept = func(string, proto.Message) error { return status.Error(codes.Unavailable, "no quorum") }
	addr := s.Start(t)
	start := time.Now()
	r := runCtx(t.Context(), "", "-m", addr, "--timeout", "300ms", "bench", "write", "--duration", "10s")
	if r.code != exitETIMEOUT || r.out != "" {
		t.Errorf("no quorum: want exit %d and no report: %+v", exitETIMEOUT, r)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("setup took %v, --timeout is 300ms", d)
	}
}

func TestBenchUsage(t *testing.T) {
	for _, args := range [][]string{
		{"bench"},
		{"bench", "scan"},
		{"bench", "write", "--clients", "0"},
		{"bench", "write", "--duration", "0s"},
		{"bench", "write", "--keys", "0"},
		{"bench", "write", "--value-size", "-1"},
	} {
		r := monctl(t, deadAddr(t), args...)
		if r.code != exitEINVAL {
			t.Errorf("%v: exit %d, want %d: %+v", args, r.code, exitEINVAL, r)
		}
	}
}

func TestLatencyHist(t *testing.T) {
	var h latencyHist
	if h.quantile(0.5) != 0 {
		t.Errorf("empty histogram quantile not 0")
	}
	// 1..10000 µs: quantile q is q*10 ms, reported within the 1/128 bucket width, never below.
	for i := 1; i <= 10000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 1} {
		want := time.Duration(q*10000) * time.Microsecond
		got := h.quantile(q)
		if got < want || float64(got) > float64(want)*(1+1.0/histSub) {
			t.Errorf("q%v = %v, want %v within 1/%d above", q, got, want, histSub)
		}
	}
	if h.max != 10*time.Millisecond || h.quantile(1) != h.max {
		t.Errorf("max %v, q1 %v", h.max, h.quantile(1))
	}
	// Bucket bounds are contiguous and each value lands in the bucket whose range holds it.
	for i := 1; i < histBuckets; i++ {
		if histUpper(i) <= histUpper(i-1) {
			t.Fatalf("bucket %d upper %d not above bucket %d's %d", i, histUpper(i), i-1, histUpper(i-1))
		}
	}
	for _, v := range []uint64{0, 1, 127, 128, 255, 256, 257, 1e6, 123456789, 1<<histMaxExp - 1, 1 << 50} {
		i := histIndex(v)
		if i < 0 || i >= histBuckets {
			t.Fatalf("histIndex(%d) = %d out of range", v, i)
		}
		if v < 1<<histMaxExp && (v > histUpper(i) || (i > 0 && v <= histUpper(i-1))) {
			t.Errorf("value %d in bucket %d [%d, %d]", v, i, histUpper(i-1)+1, histUpper(i))
		}
	}
	var m latencyHist
	m.merge(&h)
	m.merge(&h)
	if m.count != 2*h.count || m.quantile(0.5) != h.quantile(0.5) {
		t.Errorf("merge: count %d, p50 %v vs %v", m.count, m.quantile(0.5), h.quantile(0.5))
	}
}
