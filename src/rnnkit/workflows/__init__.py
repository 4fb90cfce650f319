"""What the CLI runs: each workflow is a plain function that returns a result to render."""
