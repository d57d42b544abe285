package tray

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"math"
)

// iconSize is the side of the icons in pixels; panels scale them.
const iconSize = 32

// Icon returns the PNG icon of a kind: a coloured disc with a mark, so the states
// differ in shape as well as colour. The bytes are made once and shared; do not
// modify them.
func Icon(k Kind) []byte {
	if k < 0 || int(k) >= len(icons) {
		k = DaemonUnreachable
	}
	return icons[k]
}

var icons = func() [len(kindNames)][]byte {
	var out [len(kindNames)][]byte
	for k := range out {
		out[k] = drawIcon(Kind(k))
	}
	return out
}()

func drawIcon(k Kind) []byte {
	bg := map[Kind]color.NRGBA{
		Computing:         {0x2e, 0x9d, 0x4f, 0xff}, // green
		Paused:            {0xe0, 0xa1, 0x1b, 0xff}, // amber
		Waiting:           {0x3b, 0x7d, 0xd8, 0xff}, // blue
		NoWork:            {0x8a, 0x8f, 0x98, 0xff}, // grey
		DaemonUnreachable: {0xc9, 0x30, 0x2c, 0xff}, // red
		ServerUnreachable: {0xc9, 0x30, 0x2c, 0xff},
	}[k]
	white := color.NRGBA{0xff, 0xff, 0xff, 0xff}
	img := image.NewNRGBA(image.Rect(0, 0, iconSize, iconSize))
	c := float64(iconSize-1) / 2
	r := float64(iconSize)/2 - 1
	for y := 0; y < iconSize; y++ {
		for x := 0; x < iconSize; x++ {
			if math.Hypot(float64(x)-c, float64(y)-c) <= r {
				img.SetNRGBA(x, y, bg)
			}
		}
	}
	rect := func(x0, y0, x1, y1 int) {
		for y := y0; y < y1; y++ {
			for x := x0; x < x1; x++ {
				img.SetNRGBA(x, y, white)
			}
		}
	}
	switch k {
	case Computing: // a play triangle
		for y := 9; y < 23; y++ {
			w := 11 - abs(y-16)*11/7
			rect(12, y, 12+w, y+1)
		}
	case Paused: // two bars
		rect(10, 9, 14, 23)
		rect(18, 9, 22, 23)
	case Waiting: // a clock: hands at twelve and three
		rect(15, 8, 17, 17)
		rect(15, 15, 23, 17)
	case NoWork: // a dash
		rect(9, 15, 23, 18)
	case DaemonUnreachable: // an exclamation mark
		rect(14, 7, 18, 19)
		rect(14, 21, 18, 25)
	case ServerUnreachable: // a cross
		for i := 0; i < 14; i++ {
			rect(9+i, 9+i, 11+i, 11+i)
			rect(21-i, 9+i, 23-i, 11+i)
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		panic("tray icon: " + err.Error()) // encoding an in-memory NRGBA cannot fail
	}
	return b.Bytes()
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
