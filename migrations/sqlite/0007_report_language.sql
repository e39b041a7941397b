-- The language the reporter used (the page's, or the API client's Accept-Language): their
-- receipt confirmation, status notices and incident notices go out in it. Reports from before
-- this column were all answered in Korean.
ALTER TABLE reports ADD COLUMN lang TEXT NOT NULL DEFAULT 'ko' CHECK (lang IN ('ko', 'en'));
