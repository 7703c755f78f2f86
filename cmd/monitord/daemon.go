package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/minimon/minimon/internal/monitor"
)

// httpShutdownGrace bounds the metrics server's shutdown: a scrape in flight may finish, a
// hanging one must not hold up exit.
const httpShutdownGrace = 2 * time.Second

// newLogger builds the daemon's logger: JSON (production encoder) or console, to w, at level.
// Sampling is off: election and Paxos state changes must never be dropped (go-style.md 8).
func newLogger(level, format string, w io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--%s=%q: %w", monitor.FlagLogLevel, level, err)
	}
	var enc zapcore.Encoder
	switch format {
	case "json":
		ec := zap.NewProductionEncoderConfig()
		ec.EncodeTime = zapcore.RFC3339NanoTimeEncoder
		enc = zapcore.NewJSONEncoder(ec)
	case "console":
		ec := zap.NewDevelopmentEncoderConfig()
		ec.EncodeTime = zapcore.RFC3339NanoTimeEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	default:
		return nil, fmt.Errorf("--%s=%q: want json or console", flagLogFormat, format)
	}
	ws := zapcore.Lock(zapcore.AddSync(w))
	return zap.New(zapcore.NewCore(enc, ws, lvl), zap.ErrorOutput(ws)), nil
}

// serve runs the monitor, and the metrics listener when --metrics-addr is set, until ctx is
// done. unknownEnv are MINIMON_ variables that match no flag (a warning, not an error).
func (o *daemonOpts) serve(ctx context.Context, unknownEnv []string) error {
	lg, err := newLogger(o.cfg.LogLevel, o.logFormat, o.stderr)
	if err != nil {
		return err
	}
	defer func() { _ = lg.Sync() }()
	lg.Info("starting monitord", zap.String("version", version), zap.String("name", o.cfg.Name),
		zap.String("addr", o.cfg.Addr), zap.String("data_dir", o.cfg.DataDir))
	if len(unknownEnv) > 0 {
		lg.Warn("ignoring unknown MINIMON_ environment variables (misspelt flag?)",
			zap.Strings("variables", unknownEnv))
	}

	// Listen for metrics before the monitor opens its store, so a taken port costs nothing.
	var mlis net.Listener
	if o.cfg.MetricsAddr != "" {
		if mlis, err = net.Listen("tcp", o.cfg.MetricsAddr); err != nil {
			return fmt.Errorf("--%s: %w", monitor.FlagMetricsAddr, err)
		}
	}
	m, err := monitor.New(o.cfg, lg, monitor.WithContext(ctx))
	if err != nil {
		if mlis != nil {
			_ = mlis.Close()
		}
		if ctx.Err() != nil {
			// SIGTERM during the --join handshake: a clean stop; the next start joins again.
			lg.Info("stopped during start-up", zap.Error(err))
			return nil
		}
		return removedIsClean(lg, err)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		hsrv     *http.Server
		httpDone = make(chan error, 1)
	)
	if mlis != nil {
		hsrv = &http.Server{
			Handler:           newHTTPHandler(m.Registry(), m.Ready),
			ReadHeaderTimeout: 5 * time.Second,
			ErrorLog:          zap.NewStdLog(lg.Named("http")),
		}
		go func() {
			err := hsrv.Serve(mlis)
			if errors.Is(err, http.ErrServerClosed) {
				err = nil
			} else {
				// The endpoints are part of the daemon's contract: stop rather than run blind.
				cancel()
			}
			httpDone <- err
		}()
		lg.Info("serving metrics", zap.String("metrics_addr", mlis.Addr().String()))
	}

	runErr := m.Run(ctx)

	if hsrv != nil {
		sctx, scancel := context.WithTimeout(context.Background(), httpShutdownGrace)
		if err := hsrv.Shutdown(sctx); err != nil {
			_ = hsrv.Close()
		}
		scancel()
		if err := <-httpDone; err != nil && runErr == nil {
			runErr = fmt.Errorf("metrics server: %w", err)
		}
	}
	if runErr == nil {
		lg.Info("monitord stopped")
	}
	return removedIsClean(lg, runErr)
}

// removedIsClean turns monitor.ErrRemoved into a clean exit: a supervisor must not restart a
// monitor that the cluster removed (design.md section 1).
func removedIsClean(lg *zap.Logger, err error) error {
	if errors.Is(err, monitor.ErrRemoved) {
		lg.Warn("this monitor is not in the member map; exiting with status 0", zap.Error(err))
		return nil
	}
	return err
}

// newHTTPHandler serves /metrics from reg, /healthz (the process serves) and /readyz (ready
// reports membership of a quorum).
func newHTTPHandler(reg *prometheus.Registry, ready func() bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not in quorum", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	return mux
}
