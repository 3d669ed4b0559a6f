from django.apps import AppConfig


class BenchConfig(AppConfig):
    name = "bench"
    label = "bench"

    def ready(self) -> None:
        from bench import signals  # noqa: F401  (records task start times in Redis)
