//go:build !goexperiment.runtimesecret

package memlock

// Do runs f. This build lacks GOEXPERIMENT=runtimesecret, so the stack,
// registers and heap f used are not erased afterwards: key schedules and
// hash states may linger until their memory is reused. Status reports it as
// reduced hygiene; build with make (which sets the experiment) to fix it.
func Do(f func()) { f() }

// Hygiene says how thoroughly Do erases: "reduced" without
// GOEXPERIMENT=runtimesecret.
const Hygiene = "reduced"
