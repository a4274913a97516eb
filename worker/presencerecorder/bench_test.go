package presencerecorder_test

import (
	"fmt"
	"testing"

	"github.com/presencekit/presence/agenttest"
	"github.com/presencekit/presence/worker/presencerecorder"
)

const (
	benchConnections = 100000
	benchModels      = 100
)

// loaded returns an enabled recorder with 100,000 connections spread over
// 100 models and 3 servers.
func loaded() presencerecorder.Recorder {
	r := presencerecorder.New(agenttest.NewClock())
	r.Enable()
	for i := 0; i < benchConnections; i++ {
		r.Connect(fmt.Sprintf("machine-%d", i%3), fmt.Sprintf("model-%d", i%benchModels),
			fmt.Sprintf("unit-%d", i), uint64(i), false, "")
	}
	return r
}

// BenchmarkConnectDisconnect connects and disconnects one more agent
// beside 100,000 connections (two operations per iteration).
func BenchmarkConnectDisconnect(b *testing.B) {
	r := loaded()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := uint64(benchConnections + i)
		r.Connect("machine-0", "model-0", "unit-new", id, false, "")
		r.Disconnect("machine-0", id)
	}
}

// BenchmarkActivity refreshes one of 100,000 connections.
func BenchmarkActivity(b *testing.B) {
	r := loaded()
	servers := []string{"machine-0", "machine-1", "machine-2"}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := i % benchConnections
		r.Activity(servers[id%3], uint64(id))
	}
}

// BenchmarkAgentStatus asks one agent's status in one model of 100 among
// 100,000 connections, through a fresh snapshot each time.
func BenchmarkAgentStatus(b *testing.B) {
	r := loaded()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		status, err := r.Connections().ForModel("model-7").AgentStatus("unit-7")
		if err != nil || status != presencerecorder.Alive {
			b.Fatal(status, err)
		}
	}
}

// BenchmarkAgentStatusLinearScan is the baseline for BenchmarkAgentStatus:
// a flat list of 100,000 connections scanned on every lookup, as juju's
// core/presence does.
func BenchmarkAgentStatusLinearScan(b *testing.B) {
	values := loaded().Connections().Values()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		best := presencerecorder.Unknown
		for _, v := range values {
			if v.Model == "model-7" && v.Agent == "unit-7" && !v.ControllerAgent && v.Status > best {
				best = v.Status
			}
		}
		if best != presencerecorder.Alive {
			b.Fatal(best)
		}
	}
}
