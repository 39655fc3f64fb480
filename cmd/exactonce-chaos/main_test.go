package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/exactonce/exactonce/internal/chaos"
)

func writeHistory(t *testing.T, ops []*chaos.Op) string {
	t.Helper()
	b, err := chaos.MarshalHistory(ops)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "history.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func history(secondConsume int) []*chaos.Op {
	return []*chaos.Op{
		{ID: 0, Kind: chaos.OpCreate, Action: "a1", Key: "c", Call: 0, Return: 10, Outcome: chaos.Outcome{Status: 201}},
		{ID: 1, Process: 1, Kind: chaos.OpConsume, Action: "a1", Key: "k1", Call: 20, Return: 30, Outcome: chaos.Outcome{Status: 200, PayloadOK: true}},
		{ID: 2, Process: 2, Kind: chaos.OpConsume, Action: "a1", Key: "k2", Call: 40, Return: 50, Outcome: chaos.Outcome{Status: secondConsume, Code: map[int]string{409: "already_used"}[secondConsume], PayloadOK: true}},
	}
}

func TestRecheckExitStatus(t *testing.T) {
	for _, c := range []struct {
		second int
		want   int
		out    string
	}{
		{409, 0, "0 anomalies"},
		{200, 1, "double-consume a1"},
	} {
		var out, errOut bytes.Buffer
		code := run(context.Background(), []string{"-recheck", writeHistory(t, history(c.second))}, &out, &errOut)
		if code != c.want || !strings.Contains(out.String(), c.out) {
			t.Errorf("second consume %d: exit %d, output %q; want exit %d and %q", c.second, code, out.String(), c.want, c.out)
		}
	}
}

func TestUnknownScenarioIsAUsageError(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"-scenarios", "nope"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), `unknown scenario "nope"`) {
		t.Fatalf("exit %d, stderr %q", code, errOut.String())
	}
}
