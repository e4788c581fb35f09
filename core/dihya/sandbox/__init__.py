"""The sandbox: approved plugins with mode "sandbox" run in their own confined worker process."""
