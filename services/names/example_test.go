package names_test

import (
	"fmt"

	"github.com/natsrtc/signal/services/names"
)

func Example() {
	for _, n := range []string{"alice", "a.b", "李雷"} {
		if err := names.Check(n); err != nil {
			fmt.Println(err)
			continue
		}
		tok := names.Token(n)
		back, err := names.Decode(tok)
		fmt.Printf("%s -> user.%s -> %s %v\n", n, tok, back, err)
	}
	fmt.Println(names.Check("line\nbreak"))
	_, err := names.Decode("=YWJj") // "abc" is plain: its only token is "abc"
	fmt.Println(err)
	// Output:
	// alice -> user.alice -> alice <nil>
	// a.b -> user.=YS5i -> a.b <nil>
	// 李雷 -> user.=5p2O6Zu3 -> 李雷 <nil>
	// name contains a control character
	// not a valid name token
}
