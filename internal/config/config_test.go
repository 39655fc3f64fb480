package config

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

// testKey is a valid base64 cluster key.
const testKey = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestDefaults(t *testing.T) {
	c, err := Parse(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "./data" || c.HTTPAddr != "127.0.0.1:8080" || c.RaftAddr != "127.0.0.1:8300" || c.GossipAddr != "127.0.0.1:8400" {
		t.Errorf("unexpected address defaults: %+v", c)
	}
	if c.HTTPAdvertise != "http://127.0.0.1:8080" {
		t.Errorf("HTTPAdvertise = %q", c.HTTPAdvertise)
	}
	if c.BootstrapExpect != 1 {
		t.Errorf("BootstrapExpect = %d, want 1 without --join", c.BootstrapExpect)
	}
	if c.DefaultTTL != 24*time.Hour || c.MaxTTL != 366*24*time.Hour {
		t.Errorf("TTLs = %s, %s", c.DefaultTTL, c.MaxTTL)
	}
	if c.MaxActionsPerClient != DefaultMaxActionsPerClient {
		t.Errorf("MaxActionsPerClient = %d", c.MaxActionsPerClient)
	}
	if c.Retention != DefaultRetention {
		t.Errorf("Retention = %s, want %s", c.Retention, DefaultRetention)
	}
	if c.SnapshotThreshold != 8192 || c.SnapshotInterval != 2*time.Minute || c.SnapshotsRetain != 2 {
		t.Errorf("snapshot settings = %d %s %d, want 8192 2m0s 2", c.SnapshotThreshold, c.SnapshotInterval, c.SnapshotsRetain)
	}
	c, err = Parse(nil, env(map[string]string{"EXACTONCE_MAX_ACTIONS_PER_CLIENT": "-1"}), io.Discard)
	if err != nil || c.MaxActionsPerClient != -1 {
		t.Errorf("EXACTONCE_MAX_ACTIONS_PER_CLIENT=-1: %v %v", c, err)
	}
}

func TestFlagBeatsEnv(t *testing.T) {
	e := env(map[string]string{
		"EXACTONCE_HTTP_ADDR": "127.0.0.1:9999",
		"EXACTONCE_DATA_DIR":  "/from/env",
	})
	c, err := Parse([]string{"--http-addr", "127.0.0.1:7777"}, e, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != "127.0.0.1:7777" {
		t.Errorf("HTTPAddr = %q, want the flag's value", c.HTTPAddr)
	}
	if c.DataDir != "/from/env" {
		t.Errorf("DataDir = %q, want the env value", c.DataDir)
	}
}

func TestEnvUsed(t *testing.T) {
	e := env(map[string]string{
		"EXACTONCE_JOIN":        "10.0.0.1:8400, 10.0.0.2:8400",
		"EXACTONCE_DEV":         "true",
		"EXACTONCE_DEFAULT_TTL": "2d",
		"EXACTONCE_LOG_FORMAT":  "json",
		"EXACTONCE_TLS_CERT":    "c.pem",
		"EXACTONCE_TLS_KEY":     "k.pem",
		"EXACTONCE_CLUSTER_KEY": testKey,
		"EXACTONCE_ADMIN_TOKEN": "0123456789abcdef",
	})
	c, err := Parse(nil, e, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Join) != 2 || c.Join[1] != "10.0.0.2:8400" {
		t.Errorf("Join = %q", c.Join)
	}
	if c.BootstrapExpect != 0 {
		t.Errorf("BootstrapExpect = %d, want 0 with --join", c.BootstrapExpect)
	}
	c3, err := Parse([]string{"--join", "10.0.0.1:8400"}, env(map[string]string{"EXACTONCE_BOOTSTRAP_EXPECT": "3", "EXACTONCE_CLUSTER_KEY": testKey,
		"EXACTONCE_ADMIN_TOKEN": "0123456789abcdef"}), io.Discard)
	if err != nil || c3.BootstrapExpect != 3 {
		t.Errorf("BootstrapExpect from env = %v, %v; want 3", c3, err)
	}
	if !c.Dev || c.DefaultTTL != 48*time.Hour || c.LogFormat != "json" {
		t.Errorf("env not applied: %+v", c)
	}
	if c.HTTPAdvertise != "https://127.0.0.1:8080" {
		t.Errorf("HTTPAdvertise = %q, want https with TLS", c.HTTPAdvertise)
	}
}

func TestRejected(t *testing.T) {
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"bad duration", []string{"--default-ttl", "soon"}, nil, "--default-ttl"},
		{"bad env duration", nil, map[string]string{"EXACTONCE_MAX_TTL": "10x"}, "--max-ttl"},
		{"negative duration", []string{"--default-ttl", "-1h"}, nil, "--default-ttl"},
		{"ttl over max", []string{"--default-ttl", "400d"}, nil, "longer than --max-ttl"},
		{"retention too short", []string{"--retention", "500ms"}, nil, "--retention"},
		{"retention not a duration", nil, map[string]string{"EXACTONCE_RETENTION": "forever"}, "--retention"},
		{"zero quota", []string{"--max-actions-per-client", "0"}, nil, "--max-actions-per-client"},
		{"bad env quota", nil, map[string]string{"EXACTONCE_MAX_ACTIONS_PER_CLIENT": "-2"}, "--max-actions-per-client"},
		{"bad int env", nil, map[string]string{"EXACTONCE_MAX_CSV_ROWS": "many"}, "EXACTONCE_MAX_CSV_ROWS"},
		{"bad addr", []string{"--http-addr", "localhost"}, nil, "--http-addr"},
		{"bad log level", []string{"--log-level", "loud"}, nil, "--log-level"},
		{"bad log format", []string{"--log-format", "xml"}, nil, "--log-format"},
		{"half tls", []string{"--tls-cert", "c.pem"}, nil, "--tls-key"},
		{"half raft tls", []string{"--internal-tls-cert", "c.pem", "--internal-tls-key", "k.pem"}, nil, "--internal-tls-ca"},
		{"short cluster key", []string{"--cluster-key", "c2hvcnQ="}, nil, "--cluster-key"},
		{"bad node id", []string{"--node-id", "a b"}, nil, "--node-id"},
		{"unknown flag", []string{"--nope"}, nil, "nope"},
		{"stray arg", []string{"extra"}, nil, "extra"},
		{"lone zero bootstrap", []string{"--bootstrap-expect", "0"}, nil, "--bootstrap-expect"},
		{"bad bootstrap", nil, map[string]string{"EXACTONCE_BOOTSTRAP_EXPECT": "three"}, "--bootstrap-expect"},
		{"negative bootstrap", []string{"--bootstrap-expect", "-2"}, nil, "--bootstrap-expect"},
		{"zero snapshot threshold", []string{"--snapshot-threshold", "0"}, nil, "--snapshot-threshold 0: a positive number"},
		{"negative snapshot threshold", nil, map[string]string{"EXACTONCE_SNAPSHOT_THRESHOLD": "-5"}, "EXACTONCE_SNAPSHOT_THRESHOLD -5"},
		{"snapshot threshold not a number", []string{"--snapshot-threshold", "lots"}, nil, "--snapshot-threshold"},
		{"short snapshot interval", []string{"--snapshot-interval", "10ms"}, nil, "--snapshot-interval 10ms: at least 1s"},
		{"snapshot interval not a duration", nil, map[string]string{"EXACTONCE_SNAPSHOT_INTERVAL": "often"}, "EXACTONCE_SNAPSHOT_INTERVAL"},
		{"no snapshot kept", []string{"--snapshots-retain", "0"}, nil, "--snapshots-retain 0: from 1 to 100"},
		{"too many snapshots kept", []string{"--snapshots-retain", "1000"}, nil, "--snapshots-retain 1000"},
		{"unspecified advertise", []string{"--raft-advertise", "0.0.0.0:8300"}, nil, "--raft-advertise"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.args, env(tc.env), io.Discard)
			var ue *UsageError
			if !errors.As(err, &ue) {
				t.Fatalf("err = %v, want a *UsageError", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %q, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	var sb strings.Builder
	_, err := Parse([]string{"-h"}, env(nil), &sb)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v, want flag.ErrHelp", err)
	}
	if !strings.Contains(sb.String(), "-data-dir") {
		t.Errorf("usage does not list flags: %s", sb.String())
	}
}

func TestGossipKey(t *testing.T) {
	c, err := Parse([]string{"--gossip-key", "AAAAAAAAAAAAAAAAAAAAAA=="}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.GossipKey) != 16 {
		t.Errorf("GossipKey has %d bytes, want 16", len(c.GossipKey))
	}
}

func TestSnapshotTuningFromEnvOnly(t *testing.T) {
	c, err := Parse(nil, env(map[string]string{
		TestSnapshotThresholdEnv: "256", TestTrailingLogsEnv: "128", TestSnapshotIntervalEnv: "2s",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.TestSnapshotThreshold != 256 || c.TestTrailingLogs != 128 || c.TestSnapshotInterval != 2*time.Second {
		t.Errorf("snapshot tuning = %d %d %s", c.TestSnapshotThreshold, c.TestTrailingLogs, c.TestSnapshotInterval)
	}
	d, err := Parse(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if d.TestSnapshotThreshold != 0 || d.TestTrailingLogs != 0 || d.TestSnapshotInterval != 0 {
		t.Error("snapshot tuning set without its environment variables")
	}
	for name, val := range map[string]string{TestSnapshotThresholdEnv: "-1", TestTrailingLogsEnv: "many", TestSnapshotIntervalEnv: "0s"} {
		if _, err := Parse(nil, env(map[string]string{name: val}), io.Discard); err == nil {
			t.Errorf("%s=%s accepted", name, val)
		}
	}
}

// TestSnapshotFlags: the snapshot settings come from their flags or
// environment variables.
func TestSnapshotFlags(t *testing.T) {
	c, err := Parse([]string{"--snapshot-threshold", "100000", "--snapshot-interval", "30s"},
		env(map[string]string{"EXACTONCE_SNAPSHOTS_RETAIN": "1"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.SnapshotThreshold != 100000 || c.SnapshotInterval != 30*time.Second || c.SnapshotsRetain != 1 {
		t.Errorf("snapshot settings = %d %s %d, want 100000 30s 1", c.SnapshotThreshold, c.SnapshotInterval, c.SnapshotsRetain)
	}
}

// TestAccessLogFlag: request lines are opt-in, by flag or environment.
func TestAccessLogFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want bool
	}{
		{nil, nil, false},
		{[]string{"--access-log"}, nil, true},
		{nil, map[string]string{"EXACTONCE_ACCESS_LOG": "true"}, true},
	} {
		c, err := Parse(append([]string{"--dev"}, tc.args...), env(tc.env), io.Discard)
		if err != nil {
			t.Fatalf("%v %v: %v", tc.args, tc.env, err)
		}
		if c.AccessLog != tc.want {
			t.Errorf("%v %v: AccessLog = %v, want %v", tc.args, tc.env, c.AccessLog, tc.want)
		}
	}
}

// TestMappedStateFlag: the mapped-state budget defaults to 160 MiB, is
// set by flag or environment, and refuses a budget too small to hold a
// working set.
func TestMappedStateFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want int64
	}{
		{nil, nil, DefaultMappedStateMiB},
		{[]string{"--mapped-state-mib", "512"}, nil, 512},
		{nil, map[string]string{"EXACTONCE_MAPPED_STATE_MIB": "64"}, 64},
	} {
		c, err := Parse(append([]string{"--dev"}, tc.args...), env(tc.env), io.Discard)
		if err != nil {
			t.Fatalf("%v %v: %v", tc.args, tc.env, err)
		}
		if c.MappedStateMiB != tc.want {
			t.Errorf("%v %v: MappedStateMiB = %d, want %d", tc.args, tc.env, c.MappedStateMiB, tc.want)
		}
	}
	for _, v := range []string{"0", "15", "-1", "lots"} {
		var ue *UsageError
		if _, err := Parse([]string{"--dev", "--mapped-state-mib", v}, nil, io.Discard); !errors.As(err, &ue) {
			t.Errorf("--mapped-state-mib %s: err %v, want a usage error", v, err)
		}
	}
}
