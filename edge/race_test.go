//go:build race

package edge

// The race detector allocates on its own; allocation budgets are checked
// without it (.ci/run runs them separately).
const raceEnabled = true
