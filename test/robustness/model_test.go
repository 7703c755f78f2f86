package robustness

import (
	"context"
	"math"
	"net"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/minimon/minimon/internal/sim"
)

// TestModelVersionlessReads pins the checker on histories shaped like ours (reads carry no
// version), so a harness that cannot see a stale read or a lost write fails here.
func TestModelVersionlessReads(t *testing.T) {
	put := func(c int, v string, ver uint64, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: c, Input: sim.OpInput{Kind: sim.OpPut, Key: "k", Value: v},
			Output: sim.OpOutput{Version: ver}, Call: call, Return: ret}
	}
	unknown := func(c int, v string, call int64) porcupine.Operation {
		return porcupine.Operation{ClientId: c, Input: sim.OpInput{Kind: sim.OpPut, Key: "k", Value: v},
			Output: sim.OpOutput{Unknown: true}, Call: call, Return: math.MaxInt64}
	}
	get := func(c int, v string, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: c, Input: sim.OpInput{Kind: sim.OpGet, Key: "k"},
			Output: sim.OpOutput{Value: v, NoVersion: true}, Call: call, Return: ret}
	}
	for _, c := range []struct {
		name string
		h    []porcupine.Operation
		want porcupine.CheckResult
	}{
		{"read own write", []porcupine.Operation{put(1, "a", 3, 0, 10), get(2, "a", 11, 12)}, porcupine.Ok},
		{"stale read after ack", []porcupine.Operation{put(1, "a", 3, 0, 10), put(1, "b", 4, 11, 20), get(2, "a", 21, 22)}, porcupine.Illegal},
		{"read of the initial value after ack", []porcupine.Operation{put(1, "a", 3, 0, 10), get(2, "", 11, 12)}, porcupine.Illegal},
		{"concurrent read sees either", []porcupine.Operation{put(1, "a", 3, 0, 10), put(1, "b", 4, 11, 20), get(2, "a", 12, 13)}, porcupine.Ok},
		{"unknown write seen later", []porcupine.Operation{unknown(1, "a", 0), get(2, "a", 50, 60)}, porcupine.Ok},
		{"value never written", []porcupine.Operation{put(1, "a", 3, 0, 10), get(2, "x", 11, 12)}, porcupine.Illegal},
		{"versions backwards", []porcupine.Operation{put(1, "a", 5, 0, 10), put(1, "b", 4, 11, 20)}, porcupine.Illegal},
		{"read flips back", []porcupine.Operation{put(1, "a", 3, 0, 10), put(3, "b", 4, 0, 30), get(2, "b", 11, 12), get(2, "a", 13, 14)}, porcupine.Illegal},
	} {
		if got, _ := sim.CheckLinearizable(c.h, 10*time.Second); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}

// TestPartitionCutsLink: a cut between two monitor addresses really stops TCP between them
// (both directions) and leaves 127.0.0.1 alone; a heal restores it.
func TestPartitionCutsLink(t *testing.T) {
	nf := newNetFaults(t)
	ips := clusterIPs(2)
	lis, err := net.Listen("tcp", ips[1]+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	dial := func(src string) error {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 300 * time.Millisecond}
		c, err := d.DialContext(context.Background(), "tcp", lis.Addr().String())
		if err == nil {
			_ = c.Close()
		}
		return err
	}
	if err := dial(ips[0]); err != nil {
		t.Fatalf("before the cut: %v", err)
	}
	if err := nf.Cut([2]string{ips[0], ips[1]}); err != nil {
		t.Fatal(err)
	}
	if err := dial(ips[0]); err == nil {
		t.Fatalf("%s reached %s through the cut", ips[0], ips[1])
	}
	if err := dial("127.0.0.1"); err != nil {
		t.Fatalf("the cut stopped 127.0.0.1: %v", err)
	}
	if err := nf.Heal(); err != nil {
		t.Fatal(err)
	}
	if err := dial(ips[0]); err != nil {
		t.Fatalf("after the heal: %v", err)
	}
}
