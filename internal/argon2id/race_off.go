//go:build !race

package argon2id

// raceShadow is empty without the race detector (see race_on.go).
type raceShadow struct{}

func newRaceShadow(uint32) raceShadow { return raceShadow{} }

func (raceShadow) read(uint32)  {}
func (raceShadow) write(uint32) {}
