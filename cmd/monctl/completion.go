package main

import (
	"github.com/spf13/cobra"
)

func newCompletionCmd(o *globalOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish",
		Short: "Print a shell completion script",
		Example: "  source <(monctl completion bash)\n" +
			"  monctl completion zsh > \"${fpath[1]}/_monctl\"\n" +
			"  monctl completion fish > ~/.config/fish/completions/monctl.fish",
		ValidArgs: []string{"bash", "zsh", "fish"},
		Args:      checkArgs(cobra.MatchAll(cobra.ExactArgs(1), cobra.OnlyValidArgs)),
		// No monitor is contacted: skip the root's checks of --mon-host and --format.
		PersistentPreRunE: func(*cobra.Command, []string) error { return nil },
		RunE: func(cmd *cobra.Command, args []string) error {
			root := cmd.Root()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(o.stdout, true)
			case "zsh":
				return root.GenZshCompletion(o.stdout)
			default:
				return root.GenFishCompletion(o.stdout, true)
			}
		},
	}
}
