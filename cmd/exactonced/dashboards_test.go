package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"

	"github.com/exactonce/exactonce/client"
)

// repoRoot is the repository root, two levels above this package.
const repoRoot = "../.."

// threeNodes starts a three-node cluster of real processes on loopback
// (node 1 in dev mode) and returns the API base URLs and the dev client.
func threeNodes(t *testing.T) (urls []string, clientID, secret string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs three server processes")
	}
	bin, dir := buildServer(t), t.TempDir()
	keyFile, tokenFile := filepath.Join(dir, "cluster.key"), filepath.Join(dir, "admin.token")
	if err := os.WriteFile(keyFile, []byte(b64Key(0x5a)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokenFile, []byte("admin-token-of-the-metrics-test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	gossip := []string{freePort(t), freePort(t), freePort(t)}
	var first *proc
	for i := range 3 {
		httpAddr := freePort(t)
		urls = append(urls, "http://"+httpAddr)
		args := []string{"--node-id", fmt.Sprintf("node%d", i+1), "--data-dir", filepath.Join(dir, fmt.Sprintf("node%d", i+1)),
			"--http-addr", httpAddr, "--raft-addr", freePort(t), "--gossip-addr", gossip[i],
			"--bootstrap-expect", "3", "--join", strings.Join(gossip, ","),
			"--cluster-key-file", keyFile, "--admin-token-file", tokenFile}
		if i == 0 {
			args = append(args, "--dev")
		}
		p := start(t, bin, args...)
		if i == 0 {
			first = p
		}
	}
	clientID, secret = first.devCredentials(t, 90*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, u := range urls {
		c, err := client.New(u)
		if err != nil {
			t.Fatal(err)
		}
		waitHTTPReady(ctx, t, c)
	}
	return urls, clientID, secret
}

// scrape reads a node's /metrics.
func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	res, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", base, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: status %d", base, res.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("scrape %s: parse: %v", base, err)
	}
	return fams
}

// seriesNames are the names a query can select from scraped families: a
// histogram's _bucket, _sum and _count, a summary's own name, _sum and
// _count.
func seriesNames(fams map[string]*dto.MetricFamily) map[string]bool {
	out := map[string]bool{}
	for name, f := range fams {
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM:
			out[name+"_bucket"], out[name+"_sum"], out[name+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			out[name], out[name+"_sum"], out[name+"_count"] = true, true, true
		default:
			out[name] = true
		}
	}
	return out
}

// value is the value of the family's series whose labels include labels
// (name, value pairs), 0 when there is none.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	f := fams[name]
	if f == nil {
		return 0
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			if !slices.ContainsFunc(m.GetLabel(), func(lp *dto.LabelPair) bool {
				return lp.GetName() == labels[i] && lp.GetValue() == labels[i+1]
			}) {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	return 0
}

// query is one PromQL expression of a deploy file, with where it is.
type query struct{ where, expr string }

// grafanaVariables are Grafana's interval variables, replaced by a
// duration before parsing. Template variables such as $job only appear
// inside label values (strings), which PromQL parses as they are.
var grafanaVariables = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h")

// labelValues matches a Grafana variable query label_values(<selector>, <label>).
var labelValues = regexp.MustCompile(`^label_values\((.+),\s*[A-Za-z_][A-Za-z0-9_]*\)$`)

// dashboardQueries returns every query of a Grafana dashboard: panel
// targets, annotations and template variables.
func dashboardQueries(t *testing.T, path string) []query {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var out []query
	var walk func(where string, v any)
	walk = func(where string, v any) {
		switch v := v.(type) {
		case map[string]any:
			if title, ok := v["title"].(string); ok {
				where = path + ": " + title
			}
			for k, x := range v {
				if s, ok := x.(string); ok && k == "expr" {
					out = append(out, query{where, grafanaVariables.Replace(s)})
				}
				if s, ok := x.(string); ok && k == "query" {
					if m := labelValues.FindStringSubmatch(s); m != nil {
						out = append(out, query{where + " (variable)", m[1]})
					}
				}
				walk(where, x)
			}
		case []any:
			for _, x := range v {
				walk(where, x)
			}
		}
	}
	walk(path, doc)
	return out
}

// ruleQueries returns the expr of every rule of a Prometheus rule file.
func ruleQueries(t *testing.T, path string) []query {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Groups []struct {
			Rules []struct {
				Alert  string `yaml:"alert"`
				Record string `yaml:"record"`
				Expr   string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var out []query
	for _, g := range doc.Groups {
		for _, r := range g.Rules {
			out = append(out, query{path + ": " + r.Alert + r.Record, r.Expr})
		}
	}
	return out
}

// metricNames parses a PromQL expression and returns the metric names its
// selectors name.
func metricNames(expr string) ([]string, error) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		if vs.Name != "" {
			names = append(names, vs.Name)
			return nil
		}
		for _, m := range vs.LabelMatchers {
			if m.Name == model.MetricNameLabel {
				names = append(names, m.Value)
			}
		}
		return nil
	})
	if len(names) == 0 {
		return nil, fmt.Errorf("selects no metric by name")
	}
	return names, nil
}

// prometheusOwnSeries are series Prometheus makes itself for each target:
// rules may use them although no node exports them.
var prometheusOwnSeries = map[string]bool{"up": true}

// TestDashboardAndAlertSeriesExist runs a real three-node cluster, writes
// through a follower, and checks that every metric that the Grafana
// dashboard and the alert rules query is exported by the nodes, so that
// neither can drift from the code, and that docs/metrics.md lists every
// exactonce_ family. It also checks what the issue found
// wrong: a follower counts the writes it answered.
func TestDashboardAndAlertSeriesExist(t *testing.T) {
	urls, id, secret := threeNodes(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	follower := ""
	for _, u := range urls {
		if value(scrape(t, u), "exactonce_node_leader") == 0 {
			follower = u
			break
		}
	}
	if follower == "" {
		t.Fatal("no follower among the three nodes")
	}
	c, err := client.New(follower, client.WithCredentials(id, secret))
	if err != nil {
		t.Fatal(err)
	}
	created, err := c.Create(ctx, client.CreateRequest{Payload: []byte(`{"user":"u1"}`)})
	if err != nil {
		t.Fatalf("create through the follower: %v", err)
	}
	if _, err := c.Consume(ctx, created.ActionID, nil); err != nil {
		t.Fatalf("consume through the follower: %v", err)
	}
	if _, err := c.Consume(ctx, created.ActionID, nil); !client.IsCode(err, "already_used") {
		t.Fatalf("second consume: %v, want already_used", err)
	}

	f := scrape(t, follower)
	if v := value(f, "exactonce_actions_created_total"); v != 1 {
		t.Errorf("follower's exactonce_actions_created_total = %v after it answered one 201, want 1", v)
	}
	if v := value(f, "exactonce_consumes_total", "outcome", "consumed"); v != 1 {
		t.Errorf("follower's exactonce_consumes_total{outcome=consumed} = %v, want 1", v)
	}
	if v := value(f, "exactonce_http_request_duration_seconds", "route", "/v1/actions", "method", "POST", "code", "201"); v != 1 {
		t.Errorf("follower's latency histogram holds %v POST /v1/actions 201, want 1", v)
	}
	if v := value(f, "exactonce_forwarded_commands_total", "result", "ok"); v < 2 {
		t.Errorf("follower forwarded %v commands ok, want >= 2 (create, consume)", v)
	}

	exported := map[string]bool{}
	families := map[string]bool{}
	for _, u := range urls {
		fams := scrape(t, u)
		for name := range fams {
			families[name] = true
		}
		for name := range seriesNames(fams) {
			exported[name] = true
		}
	}
	// hashicorp/raft's per-peer metric names (the peer id inside the name)
	// are dropped; the labelled forms carry the same figures.
	for name := range families {
		if strings.HasPrefix(name, "raft_") && regexp.MustCompile(`node[123]`).MatchString(name) {
			t.Errorf("%s: a metric name holding a peer id is exported", name)
		}
	}
	if !families["raft_replication_appendEntries_rpc"] && !families["raft_replication_heartbeat"] {
		t.Error("the leader exports no labelled replication timing (raft_replication_*)")
	}
	// docs/metrics.md documents every family of ours.
	doc, err := os.ReadFile(filepath.Join(repoRoot, "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	for name := range families {
		if strings.HasPrefix(name, "exactonce_") && !strings.Contains(string(doc), "`"+name+"`") {
			t.Errorf("%s is exported but not listed in docs/metrics.md", name)
		}
	}
	var queries []query
	dashboards, err := filepath.Glob(filepath.Join(repoRoot, "deploy", "grafana", "*.json"))
	if err != nil || len(dashboards) == 0 {
		t.Fatalf("no dashboard in deploy/grafana (%v)", err)
	}
	for _, d := range dashboards {
		queries = append(queries, dashboardQueries(t, d)...)
	}
	rules, err := filepath.Glob(filepath.Join(repoRoot, "deploy", "prometheus", "*.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rules {
		if strings.HasSuffix(r, "_test.yml") {
			continue // promtool's unit tests of the rules, not rules
		}
		queries = append(queries, ruleQueries(t, r)...)
	}
	if len(queries) < 20 {
		t.Fatalf("found only %d queries in the dashboards and rule files", len(queries))
	}
	missing := map[string][]string{}
	for _, q := range queries {
		names, err := metricNames(q.expr)
		if err != nil {
			t.Errorf("%s: %q: %v", q.where, q.expr, err)
			continue
		}
		for _, n := range names {
			if !exported[n] && !prometheusOwnSeries[n] {
				missing[n] = append(missing[n], q.where)
			}
		}
	}
	var ns []string
	for n := range missing {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	for _, n := range ns {
		t.Errorf("%s is queried but no node exports it (%s)", n, strings.Join(missing[n], "; "))
	}
}

// TestMetricNamesOfAQuery pins the extraction the test above relies on.
func TestMetricNamesOfAQuery(t *testing.T) {
	names, err := metricNames(`sum by (route) (rate(a_total{job="$job"}[5m])) / on() group_left b + {__name__="d"}`)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"a_total", "b", "d"}; !slices.Equal(names, want) {
		t.Errorf("names = %q, want %q", names, want)
	}
	if _, err := metricNames(`rate(x[$__rate_interval])`); err == nil {
		t.Error("a Grafana variable left in a range parsed")
	}
}
