package buildinfo

import (
	"runtime"
	"runtime/debug"
	"testing"
)

func TestResolvePrefersLinkerThenToolchainThenDev(t *testing.T) {
	stamped := &debug.BuildInfo{
		GoVersion: "go1.99.1",
		Main:      debug.Module{Version: "v0.0.0-20300101000000-abcdefabcdef"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "abcdefabcdef0123"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	for _, tc := range []struct {
		name     string
		ldV, ldR string
		bi       *debug.BuildInfo
		want     Info
	}{
		{"linker wins", "v1.2.3", "cafe", stamped, Info{"v1.2.3", "cafe", "go1.99.1"}},
		{"toolchain stamp", "", "", stamped, Info{"v0.0.0-20300101000000-abcdefabcdef", "abcdefabcdef0123-dirty", "go1.99.1"}},
		{"devel build", "", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, Info{"dev", "unknown", runtime.Version()}},
		{"no build info", "", "", nil, Info{"dev", "unknown", runtime.Version()}},
	} {
		if got := resolve(tc.ldV, tc.ldR, tc.bi); got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestGetIsNeverEmpty(t *testing.T) {
	i := Get()
	if i.Version == "" || i.Revision == "" || i.GoVersion == "" {
		t.Errorf("Get() = %+v: every field must be set", i)
	}
}
