"""The ``tasks`` and ``data`` commands: list the tasks and their data (:mod:`~lightning_mbo.tasks.commands.listing`);
download, check and refit a task's files (:mod:`~lightning_mbo.tasks.commands.data`, ``download``, ``check``)."""
