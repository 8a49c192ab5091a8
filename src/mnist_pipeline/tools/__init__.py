"""What people run on what the pipeline made: compare (a leaderboard), predict, ui, ci-report and
mark-dead-runs. No stage imports a tool, so editing one never makes a stage stale."""
