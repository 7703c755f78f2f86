package monitor

import (
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are one Monitor's Prometheus series, on a registry of its own (go-style.md 9) so
// three monitors can run in one test process. Gauges are set by the event loop; counters may
// be bumped from gRPC handlers too (they are safe for concurrent use).
type metrics struct {
	reg *prometheus.Registry

	commits       prometheus.Counter
	commitLatency prometheus.Histogram
	begins        prometheus.Counter
	electionEpoch prometheus.Gauge
	elections     prometheus.Counter
	quorumSize    prometheus.Gauge
	isLeader      prometheus.Gauge
	clientOps     *prometheus.CounterVec
}

// newMetrics registers the series; storePath is stat'ed at scrape time for the store size.
func newMetrics(storePath string) *metrics {
	reg := prometheus.NewRegistry()
	m := &metrics{
		reg: reg,
		commits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "minimon_paxos_commits_total",
			Help: "Paxos versions committed on this monitor.",
		}),
		commitLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "minimon_paxos_commit_latency_seconds",
			Help: "Time from a client write's proposal on the leader to the commit condition.",
			// 0.5 ms .. ~4 s: fsync-bound on a LAN, with room for elections.
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		begins: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "minimon_paxos_begins_total",
			Help: "Paxos BEGIN rounds started by this monitor as leader.",
		}),
		electionEpoch: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "minimon_election_epoch",
			Help: "Election epoch of this monitor's current quorum (odd while electing).",
		}),
		elections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "minimon_elections_total",
			Help: "Elections this monitor finished as leader or peon.",
		}),
		quorumSize: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "minimon_quorum_size",
			Help: "Members of this monitor's quorum; 0 when out of quorum.",
		}),
		isLeader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "minimon_is_leader",
			Help: "1 when this monitor is the leader.",
		}),
		clientOps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "minimon_client_ops_total",
			Help: "Client requests answered, by operation and gRPC result code.",
		}, []string{"op", "result"}),
	}
	storeSize := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "minimon_store_size_bytes",
		Help: "Size of the store file on disk.",
	}, func() float64 {
		fi, err := os.Stat(storePath)
		if err != nil {
			return 0
		}
		return float64(fi.Size())
	})
	reg.MustRegister(m.commits, m.commitLatency, m.begins, m.electionEpoch, m.elections,
		m.quorumSize, m.isLeader, m.clientOps, storeSize,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is this monitor's Prometheus registry, for the daemon's /metrics.
func (m *Monitor) Registry() *prometheus.Registry { return m.met.reg }
