"""The social platforms SnapAsset renders for, with their exact output sizes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Platform:
    id: str
    name: str
    width: int
    height: int


PLATFORMS: dict[str, Platform] = {
    p.id: p
    for p in (
        Platform("instagram-post", "Instagram Post", 1080, 1080),
        Platform("instagram-story", "Instagram Story", 1080, 1920),
        Platform("twitter-post", "Twitter Post", 1200, 675),
        Platform("facebook-post", "Facebook Post", 1200, 630),
        Platform("linkedin-post", "LinkedIn Post", 1200, 627),
        Platform("youtube-thumbnail", "YouTube Thumbnail", 1280, 720),
    )
}
PLATFORM_IDS: tuple[str, ...] = tuple(PLATFORMS)
